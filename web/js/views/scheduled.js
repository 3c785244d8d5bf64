// Scheduled transfers: pay someone at a set time, once or every day, week or month (a number of times or until
// cancelled); the schedules with their next run, pause, resume and cancel.
import { request } from '../api.js';
import { askFirst, field, fmtTime, formAlert, h, messageFor, onSubmit, toast } from '../dom.js';
import { amountError, digitsOf, formatMoney, typedAmount } from '../money.js';
import { pagedList } from '../paging.js';
import { navEntry, navigate, route } from '../router.js';
import { refuse } from '../rules.js';
import { normalised, recipientError, recipientFields } from './transfer.js';
import { walletLabel } from './wallets.js';

const EVERY = [
  ['', 'Once'],
  ['day', 'Every day'],
  ['week', 'Every week'],
  ['month', 'Every month'],
];
// The recipients a schedule takes (no e-mail: the API resolves a username, wallet number or phone once).
const HINTS = {
  to_username: 'Their username; each payment goes to their wallet in the same currency.',
  to_wallet_number: 'The 10-digit number of their wallet.',
  to_phone: 'Their phone in international form, such as +15551234567.',
};

function when(s) {
  const every = EVERY.find(([v]) => v === (s.every || ''))[1];
  return s.every && s.count ? `${every}, ${s.count} times` : every;
}

/** Pause / resume at once; cancel after a second "Yes". */
function scheduleActions(s) {
  const actions = h('div', { class: 'row-actions' });
  const post = async (action, words) => {
    await request('POST', `scheduled-transfers/${s.id}/${action}`);
    toast(words);
    navigate('/scheduled');
  };
  const button = (label, run) =>
    h('button', {
      type: 'button',
      onclick: () =>
        run().catch((error) => {
          if (!error.code) throw error;
          toast(messageFor(error), 'bad');
        }),
    }, label);
  actions.replaceChildren(
    s.status === 'ACTIVE' ? button('Pause', () => post('pause', 'Schedule paused.')) : button('Resume', () => post('resume', 'Schedule resumed.')),
    h(
      'button',
      {
        type: 'button',
        onclick: () =>
          askFirst(actions, {
            question: 'Cancel this schedule? No further payment is made.',
            yes: 'Yes, cancel it',
            no: 'Keep it',
            run: () => post('cancel', 'Schedule cancelled.'),
          }),
      },
      'Cancel schedule',
    ),
  );
  return actions;
}

function scheduleItem(s) {
  return h(
    'li',
    { class: 'card', dataset: { scheduleId: s.id } },
    h(
      'div',
      { class: 'page-head' },
      h('strong', {}, `${formatMoney(s.amount, s.currency)} to ${s.counterparty?.username || s.counterparty?.wallet_number || 'a wallet'}`),
      h('span', { class: `badge badge-${s.status}` }, s.status),
    ),
    h('p', { class: 'muted' }, `${when(s)} · from ${fmtTime(s.start_at)} · next ${s.next_run_at ? fmtTime(s.next_run_at) : 'none'} · ${s.runs} made`),
    s.description ? h('p', {}, s.description) : null,
    ['ACTIVE', 'PAUSED'].includes(s.status) ? scheduleActions(s) : null,
  );
}

function scheduleForm(wallets) {
  const { recipientKind, recipient, kindSelect } = recipientFields('Pay to', HINTS);
  const form = h(
    'form',
    { class: 'card', novalidate: true, 'aria-label': 'Schedule a transfer' },
    h('h2', {}, 'Schedule a transfer'),
    field({ label: 'From', name: 'from_wallet_id', options: wallets.map((w) => [w.id, `${walletLabel(w)} · ${formatMoney(w.balance, w.currency)}`]) }),
    h('div', { class: 'row' }, recipientKind, recipient),
    h(
      'div',
      { class: 'row' },
      field({ label: 'Amount', name: 'amount', inputmode: 'decimal', autocomplete: 'off', required: true }),
      field({ label: 'First payment', name: 'start_at', type: 'datetime-local', required: true }),
      field({ label: 'Repeat', name: 'every', options: EVERY }),
      field({ label: 'Times (optional)', name: 'count', inputmode: 'numeric', autocomplete: 'off', hint: 'Empty: until cancelled.' }),
    ),
    field({ label: 'Description (optional)', name: 'description', maxlength: '255', autocomplete: 'off' }),
    formAlert(),
    h('button', { type: 'submit', class: 'primary' }, 'Schedule'),
  );
  form.fieldFor = { NOT_FOUND: 'recipient', CURRENCY_MISMATCH: 'recipient', SAME_WALLET: 'recipient' };
  onSubmit(form, async (data) => {
    const wallet = wallets.find((w) => w.id === data.get('from_wallet_id'));
    const kind = kindSelect.value;
    const to = normalised(kind, data.get('recipient').trim());
    const amount = typedAmount(data.get('amount'));
    const start = data.get('start_at') ? new Date(data.get('start_at')) : null;
    const [every, count] = [data.get('every'), data.get('count').trim()];
    const countProblem = !count
      ? null
      : !every
        ? 'A payment made once has no number of times.'
        : /^[1-9][0-9]{0,3}$/.test(count) && JSON.parse(count) <= 1000
          ? null
          : 'Enter a number of times from 1 to 1000.';
    refuse({
      recipient: [recipientError(kind, to)].filter(Boolean),
      amount: [wallet ? amountError(amount, digitsOf(wallet.balance)) : 'Open a wallet first.'].filter(Boolean),
      start_at: [!start ? 'Say when the first payment is made.' : start <= new Date() ? 'The first payment must be in the future.' : null].filter(Boolean),
      count: [countProblem].filter(Boolean),
    });
    const body = { from_wallet_id: wallet.id, [kind]: to, amount, start_at: start.toISOString(), every: every || null };
    if (count) body.count = JSON.parse(count);
    if (data.get('description').trim()) body.description = data.get('description').trim();
    const made = await request('POST', 'scheduled-transfers', { body });
    toast(`Scheduled ${formatMoney(made.amount, made.currency)} to ${made.counterparty?.username || to}.`);
    navigate('/scheduled');
  });
  return form;
}

async function scheduledPage(page) {
  const [wallets, schedules] = await Promise.all([
    request('GET', 'wallets'),
    pagedList((query) => request('GET', 'scheduled-transfers', { query }), scheduleItem, {
      label: 'Your schedules',
      empty: 'Nothing scheduled yet: a rent or an allowance can go by itself, once or every day, week or month.',
    }),
  ]);
  page.append(
    h('h1', {}, 'Scheduled transfers'),
    scheduleForm(wallets.items),
    h('h2', {}, 'Your schedules'),
    ...schedules,
  );
}

route('/scheduled', scheduledPage, { live: true });
navEntry('Scheduled', '/scheduled');
