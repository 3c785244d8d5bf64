// The service worker: keeps the app shell (the page, its styles, modules and icons) so the wallet opens with no
// network, and nothing else. API answers (balances, history, tokens) never go through its cache: requests to /api/
// are not even looked at. Served beside index.html (/sw.js) so that it controls the whole app; the paths below are
// relative to it, so the app works under a path prefix too.
//
// The server serves this file, as it does the page, with the app's files named under v/<version>/ (a hash of the
// web files) instead of web/: a release changes this file, so the browser installs the new worker, which keeps the
// new release's files and, once active, drops the old ones. A versioned file never changes under its name: it is
// answered from the copy kept, without asking. The page itself (./) and the manifest are asked of the network
// first, so a new release shows at once (the page names the new version); their copy is for when the network is
// away.
const CACHE = 'wallet-shell-v1';
const SHELL = [
  './',
  'web/manifest.webmanifest',
  'web/css/app.css',
  'web/img/icon.svg',
  'web/img/icon-192.png',
  'web/img/icon-512.png',
  'web/js/api.js',
  'web/js/app.js',
  'web/js/dom.js',
  'web/js/live.js',
  'web/js/money.js',
  'web/js/network.js',
  'web/js/paging.js',
  'web/js/router.js',
  'web/js/rules.js',
  'web/js/theme.js',
  'web/js/views/admin.js',
  'web/js/views/auth.js',
  'web/js/views/google.js',
  'web/js/views/history.js',
  'web/js/views/keys.js',
  'web/js/views/mfa.js',
  'web/js/views/paystack.js',
  'web/js/views/payouts.js',
  'web/js/views/profile.js',
  'web/js/views/requests.js',
  'web/js/views/scheduled.js',
  'web/js/views/security.js',
  'web/js/views/transfer.js',
  'web/js/views/wallets.js',
];
const SHELL_URLS = new Set(SHELL.map((path) => new URL(path, location).href));
const VERSIONED = new URL('v/', location).href;

// The page and the manifest are no-cache at the server, so they are asked again; a versioned file comes from the
// browser's cache, where the page that registered this worker has just put it.
self.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll([...SHELL_URLS]))
      .then(() => self.skipWaiting()),
  );
});

// Only this release's shell is kept: other caches, and the files of earlier versions in this one, go.
self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      await Promise.all((await caches.keys()).filter((name) => name !== CACHE).map((name) => caches.delete(name)));
      const cache = await caches.open(CACHE);
      const stale = (await cache.keys()).filter((request) => !SHELL_URLS.has(request.url));
      await Promise.all(stale.map((request) => cache.delete(request)));
      await self.clients.claim();
    })(),
  );
});

function fromNetwork(event, url) {
  return fetch(event.request)
    .then((response) => {
      if (response.ok) {
        const copy = response.clone();
        event.waitUntil(caches.open(CACHE).then((cache) => cache.put(url, copy)));
      }
      return response;
    })
    .catch(() => caches.match(url).then((kept) => kept || Response.error()));
}

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  url.search = '';
  url.hash = '';
  if (event.request.method !== 'GET' || !SHELL_URLS.has(url.href)) return; // the API above all: never cached
  if (!url.href.startsWith(VERSIONED)) return event.respondWith(fromNetwork(event, url.href));
  event.respondWith(caches.match(url.href).then((kept) => kept || fromNetwork(event, url.href)));
});
