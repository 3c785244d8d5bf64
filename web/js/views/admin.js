// Admin area: find users, change their status with a reason, credit a wallet, any user's history, audit, action log.
import { request } from '../api.js';
import { facts, field, fmtTime, formAlert, h, idempotencyKeys, messageFor, onSubmit, toast } from '../dom.js';
import { amountError, digitsOf, formatMoney } from '../money.js';
import { navEntry, navigate, route } from '../router.js';
import { historyList } from './history.js';
import { walletLabel } from './wallets.js';

const ACTIONS = [
  ['freeze', 'Freeze'],
  ['unfreeze', 'Unfreeze'],
  ['activate', 'Activate'],
  ['deactivate', 'Deactivate'],
];

function tabs(current) {
  const links = [
    ['/admin', 'Users'],
    ['/admin/audit', 'Audit'],
    ['/admin/actions', 'Action log'],
  ];
  return h(
    'nav',
    { class: 'tabs', 'aria-label': 'Admin' },
    links.map(([path, label]) => h('a', { href: `#${path}`, 'aria-current': path === current ? 'page' : null }, label)),
  );
}

/** A list that pages by cursor: `fetch(cursor)` answers {items, next_cursor}; `render(item)` makes one <li>. */
async function pagedList(container, fetchPage, render, emptyText) {
  const list = h('ul', { class: 'plain-list' });
  const more = h('button', { type: 'button', class: 'more' }, 'Load more');
  const empty = h('p', { class: 'muted', hidden: true }, emptyText);
  let cursor = null;
  const load = async () => {
    const page = await fetchPage(cursor);
    list.append(...page.items.map(render));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    empty.hidden = list.children.length > 0;
  };
  more.addEventListener('click', () => load().catch((error) => toast(messageFor(error), 'error')));
  await load();
  container.append(list, empty, more);
}

function statusBadge(status) {
  return h('span', { class: `badge badge-${status}` }, status);
}

async function usersPage(page, _params, query) {
  const q = query.get('q') || '';
  const search = h(
    'form',
    { class: 'card inline-form', role: 'search' },
    h('div', { class: 'row' }, field({ label: 'Find users', name: 'q', type: 'search', value: q, hint: 'Username, e-mail or phone' })),
    h('button', { type: 'submit' }, 'Search'),
  );
  search.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = new FormData(search).get('q').trim();
    navigate(text ? `/admin?q=${encodeURIComponent(text)}` : '/admin');
  });
  page.append(h('h1', {}, 'Admin'), tabs('/admin'), search);
  await pagedList(
    page,
    (cursor) => request('GET', 'admin/users', { query: { q, cursor, limit: 20 } }),
    (u) =>
      h(
        'li',
        {},
        h(
          'a',
          { class: 'list-row', href: `#/admin/users/${u.id}` },
          h('span', {}, h('strong', {}, u.username), h('span', { class: 'muted' }, ` ${u.email || ''} ${u.phone || ''}`)),
          h('span', {}, u.role === 'admin' ? h('span', { class: 'badge' }, 'admin') : null, ' ', statusBadge(u.status)),
        ),
      ),
    'No users match.',
  );
}

function statusForm(user) {
  const form = h(
    'form',
    { class: 'card', novalidate: true },
    h('h2', {}, 'Status'),
    h('p', {}, 'Now: ', statusBadge(user.status)),
    field({ label: 'Reason (kept in the action log)', name: 'reason', maxlength: '255', autocomplete: 'off' }),
    formAlert(),
    h(
      'div',
      { class: 'actions' },
      ACTIONS.map(([action, label]) => h('button', { type: 'submit', name: 'action', value: action }, label)),
    ),
  );
  onSubmit(form, async (data, submitter) => {
    const reason = data.get('reason').trim() || null;
    const updated = await request('POST', `admin/users/${user.id}/${submitter.value}`, { body: { reason } });
    toast(`${updated.username} is now ${updated.status}.`);
    navigate(`/admin/users/${user.id}`);
  });
  return form;
}

function creditForm(wallet) {
  const form = h(
    'form',
    { class: 'card', novalidate: true },
    h('h3', {}, `${walletLabel(wallet)} · ${formatMoney(wallet.balance, wallet.currency)}`),
    h(
      'div',
      { class: 'row' },
      field({ label: `Credit amount (${wallet.currency})`, name: 'amount', inputmode: 'decimal', autocomplete: 'off' }),
      field({ label: 'Reason', name: 'reason', maxlength: '255', autocomplete: 'off' }),
    ),
    formAlert(),
    h('button', { type: 'submit' }, 'Credit'),
  );
  const once = idempotencyKeys(form);
  onSubmit(form, async (data) => {
    const amount = data.get('amount').trim();
    const invalid = amountError(amount, digitsOf(wallet.balance));
    if (invalid) throw { code: 'VALIDATION_ERROR', details: { amount: [invalid] } };
    const body = { amount, reason: data.get('reason').trim() || null };
    const tx = await once((key) =>
      request('POST', `admin/wallets/${wallet.id}/deposit`, { body, headers: { 'Idempotency-Key': key } }),
    );
    toast(`Credited ${formatMoney(tx.amount, tx.currency)}.`);
    navigate(location.hash.slice(1));
  });
  return form;
}

async function userPage(page, { id }, query) {
  const [user, wallets] = await Promise.all([
    request('GET', `admin/users/${id}`),
    request('GET', `admin/users/${id}/wallets`),
  ]);
  page.append(
    tabs(null),
    h('h1', {}, user.username),
    h(
      'section',
      { class: 'card' },
      facts([
        ['E-mail', user.email || '—'],
        ['Phone', user.phone || '—'],
        ['Role', user.role],
        ['Status', statusBadge(user.status)],
        ['Member since', fmtTime(user.created_at)],
        ['User id', h('span', { class: 'mono' }, user.id)],
      ]),
    ),
    statusForm(user),
    h('h2', {}, 'Wallets'),
    h('div', { class: 'grid two' }, wallets.items.map(creditForm)),
    h('h2', {}, 'History'),
  );
  await historyList(page, {
    endpoint: `admin/users/${id}/transactions`,
    wallets: wallets.items,
    query,
    path: `/admin/users/${id}`,
  });
}

async function auditPage(page) {
  const audit = await request('GET', 'admin/audit');
  page.append(
    h('h1', {}, 'Admin'),
    tabs('/admin/audit'),
    h(
      'section',
      { class: `card audit ${audit.ok ? 'audit-ok' : 'audit-bad'}` },
      h('h2', {}, audit.ok ? 'The ledger balances' : 'The ledger does NOT balance'),
      facts([
        ['Wallets checked', String(audit.wallets_checked)],
        ['Transactions checked', String(audit.transactions_checked)],
        ['Mismatches', String(audit.mismatches.length)],
      ]),
      audit.mismatches.length ? h('pre', {}, JSON.stringify(audit.mismatches, null, 2)) : null,
    ),
  );
}

async function actionsPage(page) {
  page.append(h('h1', {}, 'Admin'), tabs('/admin/actions'));
  await pagedList(
    page,
    (cursor) => request('GET', 'admin/actions', { query: { cursor, limit: 20 } }),
    (a) =>
      h(
        'li',
        { class: 'list-row' },
        h(
          'span',
          {},
          h('strong', {}, a.action),
          a.target_user_id ? h('a', { href: `#/admin/users/${a.target_user_id}` }, ' user') : null,
          h('span', { class: 'muted' }, a.reason ? ` · ${a.reason}` : ''),
        ),
        h('span', { class: 'muted' }, fmtTime(a.created_at)),
      ),
    'No actions yet.',
  );
}

route('/admin', usersPage, { admin: true });
route('/admin/users/:id', userPage, { admin: true });
route('/admin/audit', auditPage, { admin: true });
route('/admin/actions', actionsPage, { admin: true });
navEntry('Admin', '/admin', { admin: true });
