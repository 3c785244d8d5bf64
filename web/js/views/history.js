// History: filters (wallet, type, status, dates), newest first, "Load more" by cursor; a transaction's detail.
import { request } from '../api.js';
import { facts, field, fmtTime, h, messageFor, toast } from '../dom.js';
import { formatMoney } from '../money.js';
import { keepPage, navEntry, navigate, route } from '../router.js';
import { walletLabel } from './wallets.js';

const FILTERS = ['wallet_id', 'type', 'status', 'from', 'to'];
const PAGE_SIZE = 20;

function title(tx) {
  if (tx.type === 'TRANSFER') {
    // Null only on the sender's side of a transfer that never completed: who it was for is not told.
    const who = tx.counterparty ? tx.counterparty.username : 'a recipient';
    return tx.direction === 'in' ? `From ${who}` : `To ${who}`;
  }
  if (tx.type === 'REVERSAL') return 'Reversal';
  return tx.type === 'DEPOSIT' ? 'Deposit' : 'Withdrawal';
}

function signed(tx) {
  const sign = { in: '+', out: '−' }[tx.direction] || '';
  return `${sign}${formatMoney(tx.amount, tx.currency)}`;
}

export function transactionFacts(tx) {
  return facts([
    ['Status', h('span', { class: `badge badge-${tx.status}` }, tx.status)],
    ['Type', tx.type],
    ['Amount', signed(tx)],
    tx.counterparty ? ['Counterparty', `${tx.counterparty.username} · wallet ${tx.counterparty.wallet_number}`] : null,
    tx.description ? ['Description', tx.description] : null,
    tx.reverses ? ['Reverses', h('span', { class: 'mono' }, tx.reverses)] : null,
    /[1-9]/.test(tx.reversed_amount || '') ? ['Reversed', formatMoney(tx.reversed_amount, tx.currency)] : null,
    tx.failure_code ? ['Failed because', `${tx.failure_reason || ''} (${tx.failure_code})`] : null,
    ['Reference', h('span', { class: 'mono' }, tx.reference)],
    ['Created', fmtTime(tx.created_at)],
    ['Completed', fmtTime(tx.completed_at)],
    ['Transaction id', h('span', { class: 'mono' }, tx.id)],
  ]);
}

function row(tx) {
  return h(
    'li',
    {},
    h(
      'details',
      { class: `tx tx-${tx.status}` },
      h(
        'summary',
        {},
        h(
          'span',
          { class: 'tx-main' },
          h('strong', {}, title(tx)),
          h('span', { class: 'muted' }, `${fmtTime(tx.created_at)}${tx.description ? ' · ' + tx.description : ''}`),
          tx.status === 'FAILED' ? h('span', { class: 'tx-failure' }, tx.failure_reason || tx.failure_code) : null,
        ),
        h('span', { class: `tx-amount dir-${tx.direction}` }, signed(tx)),
        h('span', { class: `badge badge-${tx.status}` }, tx.status),
      ),
      transactionFacts(tx),
    ),
  );
}

/** A filtered, paged history from `endpoint` (GET /transactions or an admin's view of a user's). `route` is the
 * page's own path, where the filters go as query parameters (so a reload or a link keeps them). */
export async function historyList(container, { endpoint, wallets, query, path }) {
  const filters = Object.fromEntries(FILTERS.map((name) => [name, query.get(name) || '']));
  const form = h(
    'form',
    { class: 'card filters', novalidate: true, 'aria-label': 'Filters' },
    field({
      label: 'Wallet',
      name: 'wallet_id',
      options: [['', 'All wallets'], ...wallets.map((w) => [w.id, walletLabel(w)])],
      value: filters.wallet_id,
    }),
    field({
      label: 'Type',
      name: 'type',
      options: [
        ['', 'All types'],
        ['DEPOSIT', 'Deposits'],
        ['WITHDRAWAL', 'Withdrawals'],
        ['TRANSFER', 'Transfers'],
        ['REVERSAL', 'Reversals'],
      ],
      value: filters.type,
    }),
    field({
      label: 'Status',
      name: 'status',
      options: [['', 'Any status'], ['COMPLETED', 'Completed'], ['FAILED', 'Failed'], ['PENDING', 'Pending']],
      value: filters.status,
    }),
    field({ label: 'From', name: 'from', type: 'date', value: filters.from }),
    field({ label: 'To', name: 'to', type: 'date', value: filters.to }),
    h('div', { class: 'filter-actions' }, h('button', { type: 'submit' }, 'Apply'), h('a', { href: `#${path}` }, 'Clear')),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const chosen = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value) chosen.set(name, value);
    navigate(chosen.size ? `${path}?${chosen}` : path);
  });

  const list = h('ul', { class: 'tx-list', 'aria-label': 'Transactions' });
  const more = h('button', { type: 'button', class: 'more' }, 'Load more');
  const empty = h('p', { class: 'muted', hidden: true }, 'No transactions match.');
  let cursor = null;
  const load = async () => {
    more.disabled = true;
    const page = await request('GET', endpoint, { query: { ...filters, limit: PAGE_SIZE, cursor } });
    list.append(...page.items.map(row));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    more.disabled = false;
    empty.hidden = list.children.length > 0;
  };
  more.addEventListener('click', () => {
    keepPage(); // the rows loaded so far stay: a live redraw would start again from the first page
    load().catch((error) => {
      more.disabled = false;
      toast(messageFor(error), 'error');
    });
  });
  await load();
  container.append(form, list, empty, more);
}

async function historyPage(page, _params, query) {
  const { items } = await request('GET', 'wallets');
  page.append(h('h1', {}, 'History'));
  await historyList(page, { endpoint: 'transactions', wallets: items, query, path: '/history' });
}

async function transactionPage(page, { id }) {
  const tx = await request('GET', `transactions/${id}`);
  page.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/history' }, '← History')),
    h('h1', {}, `${title(tx)} · ${signed(tx)}`),
    h('section', { class: 'card' }, transactionFacts(tx)),
  );
}

route('/history', historyPage, { live: true });
route('/transactions/:id', transactionPage, { live: true });
navEntry('History', '/history');
