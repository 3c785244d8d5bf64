// Hash routing (#/path?query): each view module registers its routes and nav entries, so a new page is one module.
import { currentUser, loadUser, signedIn } from './api.js';
import { h, messageFor } from './dom.js';

const routes = [];
const navEntries = [];

/** Register a view: `path` like '/wallets/:id'; `view(main, params, query)` fills <main>. A `live` page shows
 * balances or history: it is drawn again when an event arrives (see refresh()). An `action` (the sign-out) does
 * something rather than show something: it is never a place to come back to after signing in. */
export function route(path, view, { public: open = false, admin = false, live = false, action = false } = {}) {
  const names = [];
  const pattern = path.replace(/:(\w+)/g, (_, name) => {
    names.push(name);
    return '([^/]+)';
  });
  routes.push({ regex: new RegExp(`^${pattern}$`), names, view, open, admin, live, action });
}

/** A main-menu entry, shown to signed-in users (admins only when `admin`). */
export function navEntry(label, path, { admin = false } = {}) {
  navEntries.push({ label, path, admin });
}

export function navigate(path) {
  if (location.hash === `#${path}`) render();
  else location.hash = `#${path}`;
}

function current() {
  const [path, search = ''] = location.hash.slice(1).split('?');
  return { path: path || '/', query: new URLSearchParams(search) };
}

/** The phone's menu (the nav folded behind "Menu" on a narrow screen): open or closed. */
function menu(open) {
  document.getElementById('menu-toggle').setAttribute('aria-expanded', String(open));
  document.querySelector('.topbar').classList.toggle('open', open);
}
document.getElementById('menu-toggle').addEventListener('click', (event) => {
  menu(event.currentTarget.getAttribute('aria-expanded') !== 'true');
});
window.addEventListener('hashchange', () => menu(false));

export function renderNav() {
  const nav = document.getElementById('nav');
  const user = currentUser();
  const { path } = current();
  nav.replaceChildren(
    ...(user
      ? navEntries
          .filter((e) => !e.admin || user.role === 'admin')
          .map((e) =>
            h(
              'a',
              {
                href: `#${e.path}`,
                'aria-current': path.startsWith(e.path) ? 'page' : null,
                // navigate() draws the page on screen afresh when it is chosen again (the browser fires no
                // hashchange for the same hash); a modified click still opens a new tab or window.
                onclick: (event) => {
                  if (event.ctrlKey || event.metaKey || event.shiftKey) return;
                  event.preventDefault();
                  menu(false);
                  navigate(e.path);
                },
              },
              e.label,
            ),
          )
      : []),
  );
}

function matching(path) {
  return routes.map((r) => [r, r.regex.exec(path)]).find(([, m]) => m);
}

/** Whether `path` is a signed-in page to go (back) to after a sign-in: not a public page, not an action. */
export function isPage(path) {
  const [entry] = matching(path.split('?')[0]) || [];
  return Boolean(entry && !entry.open && !entry.action);
}

function renderBanner() {
  const banner = document.getElementById('banner');
  const user = currentUser();
  const text =
    user?.status === 'frozen'
      ? 'Your account is frozen: deposits, withdrawals and transfers are refused. Contact support.'
      : '';
  banner.textContent = text;
  banner.hidden = !text;
}

let rendering = 0;
let kept = false; // the person changed a field of the page on screen, opened a detail or loaded more of it
document.getElementById('main').addEventListener('input', () => keepPage());
// A row's <details> opened or closed (toggle does not bubble: caught on its way down).
document.getElementById('main').addEventListener('toggle', () => keepPage(), true);

/** The page on screen holds more than its first draw (a history's further pages, a row opened): a live redraw,
 * which would draw it afresh, waits for the next visit as it does for a changed field. */
export function keepPage() {
  kept = true;
}

/** The person is at work on the page on screen: the focus is in one of its forms, or it is kept (keepPage). A live
 * redraw would throw their work away: it is held back (see stale()). */
function busy() {
  return kept || Boolean(document.activeElement?.closest('#main form'));
}

/** A redraw was held back: <main data-stale>, and a line at the top of the page offers the news when the person
 * wants it (a visit of the same page, which draws it afresh). */
function stale(main) {
  if ('stale' in main.dataset) return;
  main.dataset.stale = '';
  main.prepend(
    h(
      'p',
      { class: 'stale-note' },
      'There is news since this page was drawn. ',
      h('button', { type: 'button', class: 'link-button', onclick: () => render() }, 'Show the latest'),
    ),
  );
}

let visiting = false; // a visit (a navigation) is being drawn and is not on screen yet

/** A visit on its way: <main aria-busy>, the bar at the top, and the menu already on the page being loaded. */
function loading(on) {
  const main = document.getElementById('main');
  if (on) main.setAttribute('aria-busy', 'true');
  else main.removeAttribute('aria-busy');
  document.getElementById('progress').hidden = !on;
  if (on) renderNav();
}

/** Draw the page of the current hash. `again`: the same page redrawn with fresh data, where focus stays put
 * unless it was on something the redraw removed. A redraw that overtakes a visit still on its way is that visit. */
export async function render({ again: redraw = false } = {}) {
  const ticket = ++rendering;
  const again = redraw && !visiting;
  visiting = !again;
  const { path, query } = current();
  const match = matching(path);
  if (!match) return navigate(signedIn() ? '/wallets' : '/login');
  const [entry, groups] = match;
  if (!entry.open && !signedIn()) return navigate(entry.action ? '/login' : `/login?next=${encodeURIComponent(path)}`);
  const main = document.getElementById('main');
  if (!again) loading(true); // at once: the menu shows where the person is going, and that it is on its way
  // The user (fresh status and role on every page) and the page's own data load side by side.
  const fresh = signedIn()
    ? loadUser().catch(() => {}) // a lost session has already been ended by the API client; the login page follows
    : null;
  const page = h('div', { class: 'page' });
  if (entry.admin && (currentUser() ?? (await fresh))?.role !== 'admin') {
    page.append(h('h1', {}, 'Not allowed'), h('p', {}, 'This page is for administrators.'));
  } else {
    const params = Object.fromEntries(entry.names.map((n, i) => [n, decodeURIComponent(groups[i + 1])]));
    try {
      await entry.view(page, params, query);
    } catch (error) {
      if (!error.code) throw error;
      page.replaceChildren(
        h('h1', {}, 'Something went wrong'),
        h('p', { class: 'form-alert' }, messageFor(error)),
        h('button', { type: 'button', class: 'primary', onclick: () => render() }, 'Retry'),
      );
    }
  }
  await fresh;
  if (ticket !== rendering) return;
  if (!entry.open && !signedIn()) return navigate('/login');
  loading(false);
  renderNav();
  renderBanner();
  if (again && busy()) return stale(main); // the person began to type or choose while the redraw was on its way
  main.replaceChildren(page);
  kept = false;
  visiting = false;
  delete main.dataset.stale;
  main.dataset.view = location.hash; // what is on screen (tests wait for it)
  (main.querySelector('h1') || main).setAttribute('tabindex', '-1');
  if (document.activeElement === document.body || (!again && !main.contains(document.activeElement))) {
    main.querySelector('h1')?.focus({ preventScroll: true });
  }
}

/** Something changed on the server (an event arrived): redraw a live page, unless the person is at work in it (their
 * input is kept; the next change or visit shows the news); any other page gets a fresh banner. */
export async function refresh() {
  const [entry] = matching(current().path) || [];
  if (entry?.live) {
    if (visiting || !busy()) return render({ again: true }); // a visit on its way is drawn again with the news
    stale(document.getElementById('main'));
  }
  try {
    await loadUser();
  } catch {
    return; // a lost session has already been ended by the API client
  }
  renderBanner();
}
