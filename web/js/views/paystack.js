// Paystack deposits: "Pay with Paystack" on a wallet's page (off to Paystack's checkout), and the page it returns to.
import { enabled, request } from '../api.js';
import { facts, field, fmtTime, formAlert, h, idempotencyKeys, onSubmit } from '../dom.js';
import { amountError, digitsOf, formatMoney, typedAmount } from '../money.js';
import { render, route } from '../router.js';

const CURRENCIES = new Set(['NGN', 'GHS', 'ZAR', 'KES', 'USD']); // the ones Paystack settles
let notConfigured = false; // the server said 503 PROVIDER_NOT_CONFIGURED: stop offering it until a reload

/** The form on a wallet's page, or null where Paystack cannot be used. */
export function paystackForm(wallet) {
  if (notConfigured || !enabled('paystack') || !CURRENCIES.has(wallet.currency)) return null;
  const form = h(
    'form',
    { class: 'card', novalidate: true },
    h('h2', {}, 'Pay with Paystack'),
    h('p', { class: 'muted' }, 'Card, bank or mobile money on Paystack’s page; the wallet is credited once Paystack confirms.'),
    field({ label: `Amount to pay (${wallet.currency})`, name: 'amount', inputmode: 'decimal', autocomplete: 'off', required: true }),
    formAlert(),
    h('button', { type: 'submit', class: 'primary' }, 'Pay with Paystack'),
  );
  const once = idempotencyKeys(form);
  onSubmit(form, async (data) => {
    const amount = typedAmount(data.get('amount'));
    const invalid = amountError(amount, digitsOf(wallet.balance));
    if (invalid) throw { code: 'VALIDATION_ERROR', details: { amount: [invalid] } };
    // Paystack appends ?reference=... to this URL, which lands in the hash route's query.
    const body = { amount, callback_url: `${location.origin}${location.pathname}#/deposit-return` };
    try {
      const { authorization_url: checkout } = await once((key) =>
        request('POST', `wallets/${wallet.id}/deposits/paystack`, { body, headers: { 'Idempotency-Key': key } }),
      );
      location.assign(checkout);
    } catch (error) {
      if (error.code === 'PROVIDER_NOT_CONFIGURED') {
        notConfigured = true;
        error.message = 'Paystack deposits are not set up on this server.';
      }
      throw error;
    }
  });
  return form;
}

const HEADINGS = { COMPLETED: 'Deposit received', PENDING: 'Waiting for Paystack', FAILED: 'Deposit failed' };

/** Where Paystack sends the payer back: the deposit as the server knows it (a PENDING one is checked with Paystack). */
async function depositReturn(page, _params, query) {
  // Our fake and Paystack may put the reference in the hash's query or in the page's own query string.
  const reference = query.get('reference') || new URLSearchParams(location.search).get('reference');
  if (!reference) {
    page.append(h('h1', {}, 'Paystack deposit'), h('p', {}, 'This page needs the deposit’s reference.'));
    return;
  }
  const tx = await request('GET', `deposits/${encodeURIComponent(reference)}`);
  const wallet = await request('GET', `wallets/${tx.destination_wallet_id}`);
  page.append(
    h('h1', {}, HEADINGS[tx.status]),
    h(
      'section',
      { class: 'card' },
      facts([
        ['Amount', formatMoney(tx.amount, tx.currency)],
        ['Status', h('span', { class: `badge badge-${tx.status}` }, tx.status)],
        tx.failure_reason ? ['Failed because', tx.failure_reason] : null,
        ['Reference', h('span', { class: 'mono' }, tx.reference)],
        ['Started', fmtTime(tx.created_at)],
        ['Wallet balance now', h('span', { class: 'balance' }, formatMoney(wallet.balance, wallet.currency))],
      ]),
      tx.status === 'PENDING' ? h('button', { type: 'button', onclick: () => render() }, 'Check again') : null,
      h('p', {}, h('a', { href: `#/wallets/${wallet.id}` }, 'Back to the wallet →')),
    ),
  );
}

route('/deposit-return', depositReturn);
