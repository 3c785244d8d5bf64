# The wallet server as a container: the installed package (no test tools), run as an unprivileged user.
# docker build -t wallet-server . && docker run -e DATABASE_URL=... -e REDIS_URL=... -e JWT_SECRET=... wallet-server
FROM python:3.11-slim

WORKDIR /src
# Dependencies first: this layer is reused until requirements.txt changes. Not the embedded PostgreSQL
# (requirements-embedded.txt): the container is given DATABASE_URL.
COPY requirements.txt ./
RUN pip install --no-cache-dir --disable-pip-version-check -r requirements.txt
COPY pyproject.toml setup.py README.md server.py serving.py settings.py ./
COPY handlers handlers
COPY wallet wallet
COPY models models
COPY migrations migrations
COPY web web
# The git revision built (/health, --version); the build context has no .git: --build-arg WALLET_REVISION=...
ARG WALLET_REVISION
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps . && rm -rf /src

RUN useradd --system --create-home --home-dir /var/lib/wallet wallet
USER wallet
WORKDIR /var/lib/wallet

# Listen on every interface of the container; VAR_DIR holds the JWT secret when JWT_SECRET is not given.
ENV HOST=0.0.0.0 PORT=8000 VAR_DIR=/var/lib/wallet
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/ready', timeout=2)"]

ENTRYPOINT ["wallet-server"]
CMD ["serve"]
