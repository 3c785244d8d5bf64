// History: filters (wallet, type, status, dates), newest first under a heading per day, "Load more" by cursor; a
// transaction's detail.
import { request } from '../api.js';
import { dayKey, dayTitle, facts, field, fmtTime, h, messageFor, timeAgo, toast } from '../dom.js';
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
          h('span', { class: 'muted' }, timeAgo(tx.created_at), tx.description ? ` · ${tx.description}` : null),
          tx.status === 'FAILED' ? h('span', { class: 'tx-failure' }, tx.failure_reason || tx.failure_code) : null,
        ),
        h('span', { class: `tx-amount dir-${tx.direction}` }, signed(tx)),
        h('span', { class: `badge badge-${tx.status}` }, tx.status),
      ),
      transactionFacts(tx),
    ),
  );
}

let dayIds = 0;

/** Rows under a heading per day (`level`: h2, or h3 below a page's own h2), newest first. `add(items)` appends a
 * page of them: a day that began on the page before goes on under its heading, so a day is one group however the
 * cursor cut it. */
function dayGroups(level) {
  const days = h('div', { class: 'tx-days' });
  let day = null;
  let rows = null;
  const add = (items) => {
    for (const tx of items) {
      const date = new Date(tx.created_at);
      if (dayKey(date) !== day) {
        day = dayKey(date);
        const id = `day-${++dayIds}`;
        rows = h('ul', { class: 'tx-list', 'aria-labelledby': id });
        days.append(h('section', { class: 'tx-day' }, h(level, { id, class: 'day-title' }, dayTitle(date)), rows));
      }
      rows.append(row(tx));
    }
  };
  return { days, add };
}

/** A filtered, paged history from `endpoint` (GET /transactions or an admin's view of a user's). `route` is the
 * page's own path, where the filters go as query parameters (so a reload or a link keeps them). */
export async function historyList(container, { endpoint, wallets, query, path, level = 'h2' }) {
  const filters = Object.fromEntries(FILTERS.map((name) => [name, query.get(name) || '']));
  const filtered = FILTERS.some((name) => filters[name]);
  const groups = dayGroups(level);
  const more = h('button', { type: 'button', class: 'more' }, 'Load more');
  const empty = h(
    'p',
    { class: 'muted empty', hidden: true },
    filtered
      ? 'No transactions match these filters.'
      : [
          'No transactions yet. ',
          h('a', { href: '#/wallets' }, 'Add money'),
          ' or ',
          h('a', { href: '#/wallets' }, 'share your wallet number'),
          ' to get started.',
        ],
  );
  let cursor = null;
  const load = async () => {
    more.disabled = true;
    const page = await request('GET', endpoint, { query: { ...filters, limit: PAGE_SIZE, cursor } });
    groups.add(page.items);
    cursor = page.next_cursor;
    more.hidden = !cursor;
    more.disabled = false;
    empty.hidden = groups.days.children.length > 0;
  };
  more.addEventListener('click', () => {
    keepPage(); // the rows loaded so far stay: a live redraw would start again from the first page
    load().catch((error) => {
      more.disabled = false;
      toast(messageFor(error), 'error');
    });
  });
  // The wallets (for the filter) and the first page load side by side: `wallets` may be a promise.
  const [walletItems] = await Promise.all([wallets, load()]);
  const form = h(
    'form',
    { class: 'card filters', novalidate: true, 'aria-label': 'Filters' },
    field({
      label: 'Wallet',
      name: 'wallet_id',
      options: [['', 'All wallets'], ...walletItems.map((w) => [w.id, walletLabel(w)])],
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
    if (form.elements.from.value && form.elements.to.value && form.elements.from.value > form.elements.to.value) {
      form.querySelector('[data-error-for="to"]').textContent = 'The end date is before the start date.';
      form.elements.to.setAttribute('aria-invalid', 'true');
      return form.elements.to.focus();
    }
    const chosen = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value) chosen.set(name, value);
    navigate(chosen.size ? `${path}?${chosen}` : path);
  });

  container.append(form, groups.days, empty, more);
}

async function historyPage(page, _params, query) {
  page.append(h('h1', {}, 'History'));
  const wallets = request('GET', 'wallets').then(({ items }) => items);
  await historyList(page, { endpoint: 'transactions', wallets, query, path: '/history' });
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
