// Light or dark: the system's choice (prefers-color-scheme) unless the person picked one with the toggle in the top
// bar, which is kept in localStorage. <html data-theme="light|dark"> is what the stylesheet reads.
const KEY = 'wallet.theme';
const system = matchMedia('(prefers-color-scheme: dark)');
const button = document.getElementById('theme-toggle');

function apply() {
  const chosen = localStorage.getItem(KEY);
  const dark = chosen ? chosen === 'dark' : system.matches;
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';
  button.setAttribute('aria-pressed', String(dark));
}

button.addEventListener('click', () => {
  localStorage.setItem(KEY, document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark');
  apply();
});
system.addEventListener('change', apply);
apply();
