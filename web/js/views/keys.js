// API keys: create one (its secret shown once, with a copy button), list them, revoke, roll over.
import { request } from '../api.js';
import { askFirst, field, fmtTime, formAlert, h, onSubmit, toast } from '../dom.js';
import { navEntry, route } from '../router.js';

const SCOPES = [
  ['read', 'Read wallets and history'],
  ['deposit', 'Deposit'],
  ['withdraw', 'Withdraw'],
  ['transfer', 'Transfer'],
];
const LIFETIMES = [
  ['1M', '30 days'],
  ['1W', '1 week'],
  ['1D', '1 day'],
  ['1H', '1 hour'],
  ['1Y', '1 year'],
];
const GRACE = [
  ['0', 'Stop it now'],
  ['3600', 'Keep it working 1 hour'],
  ['86400', 'Keep it working 1 day'],
];

/** The secret of a key just made: on screen until the page is left, never stored, never listed again. */
function showSecret(box, key) {
  const secret = h('code', { class: 'mono secret' }, key.key);
  const copy = h('button', { type: 'button' }, 'Copy');
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(key.key);
      toast('Copied.');
    } catch {
      toast('Copying was refused: select the key and copy it by hand.', 'bad');
    }
  });
  box.replaceChildren(
    h('h2', {}, `Your new key “${key.name}”`),
    h('p', {}, 'Copy it now: it is shown only once. Send it in the X-API-Key header.'),
    h('p', {}, secret),
    copy,
  );
  box.hidden = false;
  box.focus();
}

/** A key's actions: revoke and roll over, each behind a confirmation step. */
function keyActions(key, { box, reload }) {
  const actions = h('div', { class: 'row-actions' });
  const ask = (question, yes, extra, run) =>
    askFirst(actions, {
      question,
      yes,
      extra,
      run: async (data) => {
        await run(data);
        await reload();
      },
    });
  const buttons = [
    h('button', { type: 'button', onclick: () => ask(`Revoke “${key.name}”? Anything using it stops at once.`, 'Yes, revoke', null, async () => {
      await request('POST', `keys/${key.id}/revoke`);
      toast(`Revoked “${key.name}”.`);
    }) }, 'Revoke'),
    h('button', { type: 'button', onclick: () => ask(`Roll over “${key.name}”: a new secret with the same scopes.`, 'Roll over',
      field({ label: 'The old key', name: 'grace_seconds', options: GRACE }), async (data) => {
        const fresh = await request('POST', `keys/${key.id}/rollover`, { body: { grace_seconds: JSON.parse(data.get('grace_seconds')) } });
        showSecret(box, fresh);
      }) }, 'Roll over'),
  ];
  actions.replaceChildren(...buttons);
  return actions;
}

function keyItem(key, context) {
  return h(
    'li',
    { class: 'card key', dataset: { keyId: key.id } },
    h('div', { class: 'page-head' }, h('strong', {}, key.name), h('span', { class: `badge badge-${key.status}` }, key.status)),
    h('p', { class: 'muted' }, h('span', { class: 'mono' }, `${key.prefix}…`), ` · ${key.scopes.join(', ')}`),
    h('p', { class: 'muted' }, `Expires ${fmtTime(key.expires_at)} · last used ${key.last_used_at ? fmtTime(key.last_used_at) : 'never'}`),
    key.status === 'active' ? keyActions(key, context) : null,
  );
}

async function keysPage(page) {
  const box = h('section', { class: 'card secret-box', hidden: true, tabindex: '-1', 'aria-label': 'New key' });
  const list = h('ul', { class: 'plain-list', 'aria-label': 'Your keys' });
  const reload = async () => {
    const { items } = await request('GET', 'keys', { query: { limit: 200 } });
    list.replaceChildren(...(items.length ? items.map((k) => keyItem(k, { box, reload })) : [h('li', { class: 'muted' }, 'No keys yet.')]));
  };
  const form = h(
    'form',
    { class: 'card', novalidate: true },
    h('h2', {}, 'Create a key'),
    field({ label: 'Name', name: 'name', maxlength: '64', autocomplete: 'off', required: true, hint: 'What uses it, e.g. Accounting export' }),
    h(
      'fieldset',
      { class: 'scopes' },
      h('legend', {}, 'What it may do'),
      SCOPES.map(([value, text]) =>
        h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'scopes', value, checked: value === 'read' }), ` ${text}`),
      ),
      h('p', { class: 'error', dataset: { errorFor: 'scopes' } }),
    ),
    field({ label: 'Expires after', name: 'expires_in', options: LIFETIMES }),
    formAlert(),
    h('button', { type: 'submit', class: 'primary' }, 'Create key'),
  );
  onSubmit(form, async (data) => {
    const key = await request('POST', 'keys', {
      body: { name: data.get('name').trim(), scopes: data.getAll('scopes'), expires_in: data.get('expires_in') },
    });
    form.reset();
    await reload();
    showSecret(box, key);
  });
  await reload();
  page.append(h('h1', {}, 'API keys'), box, form, h('h2', {}, 'Your keys'), list);
}

route('/keys', keysPage);
navEntry('API keys', '/keys');
