"""The build's one step beyond pyproject.toml: stamp the git revision it builds into the package
(wallet/platform/REVISION), since an installed server has no .git to ask. WALLET_REVISION overrides it, for a
build whose sources carry no .git (a container build: `docker build --build-arg WALLET_REVISION=...`)."""

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wallet.platform import release  # the tree being built, not an installed copy


class StampRevision(build_py):
    def run(self) -> None:
        super().run()
        stamp = Path(self.build_lib, "wallet", "platform", release.REVISION_FILE.name)
        stamp.write_text((os.environ.get("WALLET_REVISION") or release.revision()) + "\n")


setup(cmdclass={"build_py": StampRevision})
