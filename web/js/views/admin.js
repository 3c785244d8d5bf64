// Admin area: find users, change their status with a reason, credit a wallet, any user's history, audit, action log.
import { request } from '../api.js';
import { facts, field, fmtTime, formAlert, h, idempotencyKeys, onSubmit, showError, toast } from '../dom.js';
import { amountError, digitsOf, formatMoney, typedAmount } from '../money.js';
import { pagedList } from '../paging.js';
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
  const users = await pagedList(
    (at) => request('GET', 'admin/users', { query: { q, ...at } }),
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
    { label: 'Users', empty: 'No users match.' },
  );
  page.append(h('h1', {}, 'Admin'), tabs('/admin'), search, ...users);
}

// Actions that stop an account: asked again, with a reason, before they are done.
const GRAVE = {
  freeze: (name) => `Freeze ${name}? They can still sign in and read, but no money moves in or out.`,
  deactivate: (name) => `Deactivate ${name}? They are signed out everywhere and cannot sign in again.`,
};

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
  const confirmBox = h('div', { class: 'inline-confirm', role: 'group', 'aria-label': 'Confirm', hidden: true });
  form.append(confirmBox);
  const act = async (action, reason) => {
    const updated = await request('POST', `admin/users/${user.id}/${action}`, { body: { reason } });
    toast(`${updated.username} is now ${updated.status}.`);
    navigate(`/admin/users/${user.id}`);
  };
  onSubmit(form, async (data, submitter) => {
    const action = submitter.value;
    const reason = data.get('reason').trim() || null;
    if (!GRAVE[action]) return act(action, reason);
    if (!reason) throw { code: 'VALIDATION_ERROR', details: { reason: [`Say why you ${action} this account.`] } };
    const label = ACTIONS.find(([a]) => a === action)[1];
    const yes = h('button', { type: 'button', class: 'danger' }, `Yes, ${label.toLowerCase()}`);
    const no = h('button', { type: 'button' }, 'Cancel');
    confirmBox.replaceChildren(h('p', {}, GRAVE[action](user.username)), yes, no);
    confirmBox.hidden = false;
    no.addEventListener('click', () => {
      confirmBox.hidden = true;
      submitter.focus();
    });
    yes.addEventListener('click', async () => {
      yes.disabled = no.disabled = true;
      try {
        await act(action, reason);
      } catch (error) {
        if (!error.code) throw error;
        confirmBox.hidden = true;
        showError(form, error);
      } finally {
        yes.disabled = no.disabled = false;
      }
    });
    yes.focus();
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
    const amount = typedAmount(data.get('amount'));
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
    level: 'h3', // below the page's "History"
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

const ACTION_WORDS = {
  freeze: 'Froze',
  unfreeze: 'Unfroze',
  deactivate: 'Deactivated',
  activate: 'Activated',
  credit: 'Credit',
  reverse: 'Reversal',
  fx_rate: 'Exchange rate',
};

/** One entry of the action log: what, to whom, by whom, and for money whether it was done or refused, and how much. */
function actionRow(a) {
  const d = a.details || {};
  const money = d.amount !== undefined;
  const refused = money && d.status === 'FAILED';
  const target = a.target_user_id
    ? h('a', { href: `#/admin/users/${a.target_user_id}` }, a.target_username || 'a user')
    : null;
  return h(
    'li',
    { class: `list-row action ${refused ? 'action-refused' : ''}` },
    h(
      'span',
      { class: 'action-main' },
      h('strong', {}, ACTION_WORDS[a.action] || a.action),
      money ? h('span', { class: 'action-amount' }, ` ${formatMoney(d.amount, d.currency)}`) : null,
      target ? [' · ', target] : null,
      d.from && d.to ? h('span', { class: 'muted' }, ` (${d.from} → ${d.to})`) : null,
      money
        ? h(
            'span',
            { class: `badge badge-${refused ? 'FAILED' : d.status}` },
            refused ? `refused${d.failure_code ? ': ' + d.failure_code : ''}` : d.status.toLowerCase(),
          )
        : null,
      h('span', { class: 'muted action-why' }, a.reason ? `“${a.reason}”` : 'no reason given'),
    ),
    h('span', { class: 'muted' }, `by ${a.admin_username || 'an admin'} · ${fmtTime(a.created_at)}`),
  );
}

async function actionsPage(page) {
  const actions = await pagedList((query) => request('GET', 'admin/actions', { query }), actionRow, {
    label: 'Actions',
    empty: 'No actions yet.',
  });
  page.append(h('h1', {}, 'Admin'), tabs('/admin/actions'), ...actions);
}

route('/admin', usersPage, { admin: true });
route('/admin/users/:id', userPage, { admin: true });
route('/admin/audit', auditPage, { admin: true });
route('/admin/actions', actionsPage, { admin: true });
navEntry('Admin', '/admin', { admin: true });
