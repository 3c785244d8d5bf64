// DOM helpers: elements built with text nodes (never innerHTML, so API data cannot inject markup), form fields,
// errors shown where they belong, submissions that cannot run twice, and toasts.

/** h('p', {class: 'x', onclick: fn}, 'text', child, [more]) -> an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name === 'value') el.value = value;
    else el.setAttribute(name, value === true ? '' : value);
  }
  el.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

let fieldIds = 0;

/** A labelled input or select with a hint and a place for its error (name = the API field it feeds). */
export function field({ label, name, type = 'text', options, hint, ...attrs }) {
  const id = `f${++fieldIds}-${name}`;
  const errorId = `${id}-error`;
  const hintId = hint ? `${id}-hint` : null;
  const common = { id, name, 'aria-describedby': [hintId, errorId].filter(Boolean).join(' '), ...attrs };
  const control = options
    ? h('select', common, options.map(([value, text]) => h('option', { value }, text)))
    : h('input', { type, ...common });
  if (options && attrs.value !== undefined) control.value = attrs.value;
  return h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label),
    control,
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null,
    h('p', { class: 'error', id: errorId, dataset: { errorFor: name } }),
  );
}

// Words for the codes a person meets; any other code shows the server's own message.
const MESSAGES = {
  INSUFFICIENT_FUNDS: 'Not enough money in this wallet for that amount.',
  DAILY_LIMIT_EXCEEDED: "That would go over today's limit for this currency.",
  ACCOUNT_FROZEN: 'This account is frozen: money cannot move in or out of it. Contact support.',
  ACCOUNT_INACTIVE: 'This account is closed.',
  CURRENCY_MISMATCH: 'The recipient has no wallet in this currency.',
  SAME_WALLET: 'You cannot send money to the same wallet.',
  INVALID_CREDENTIALS: 'Wrong username or password.',
  RATE_LIMITED: 'Too many attempts. Wait a few minutes and try again.',
  IDEMPOTENCY_IN_PROGRESS: 'This request is still being processed. Try again in a moment.',
  STEP_UP_REQUIRED: 'This needs you to confirm it is you: try again, and enter your password or code when asked.',
  TWO_FACTOR_REQUIRED:
    'Administrators must use two-factor sign-in: turn it on under Security, then sign in again with a code.',
  SERVICE_UNAVAILABLE: 'The service is unavailable right now. Try again shortly.',
};

export function messageFor(error) {
  return MESSAGES[error.code] || error.message;
}

/** Clear a form's errors. */
export function clearErrors(form) {
  for (const p of form.querySelectorAll('.error')) p.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
}

/** Show an API error in a form: VALIDATION_ERROR details under their fields; `fieldFor[code]` puts a refusal under
 * a field; anything else in the form's alert. `form.words[code]` says a code in this form's own words. */
export function showError(form, error, fieldFor = {}) {
  clearErrors(form);
  const words = () => form.words?.[error.code] || messageFor(error);
  const alert = form.querySelector('.form-alert');
  const placed = (name, text) => {
    const slot = form.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
    if (!slot) return false;
    slot.textContent = text;
    form.elements[name]?.setAttribute?.('aria-invalid', 'true'); // a group of checkboxes is a list: no one control
    return true;
  };
  const loose = [];
  if (error.code === 'VALIDATION_ERROR' && error.details) {
    for (const [name, texts] of Object.entries(error.details)) {
      const text = [texts].flat(Infinity).join(' ');
      if (!placed(name, text)) loose.push(name === '_schema' ? text : `${name}: ${text}`);
    }
  } else if (!(fieldFor[error.code] && placed(fieldFor[error.code], words()))) {
    loose.push(words());
  }
  alert.textContent = loose.join(' ');
  alert.hidden = loose.length === 0;
  (form.querySelector('[aria-invalid]') || alert).focus?.();
}

/** A form's alert line (role=alert), for errors that belong to no one field. */
export function formAlert() {
  return h('p', { class: 'form-alert', role: 'alert', tabindex: '-1', hidden: true });
}

/** Run `fn` on submit with the buttons disabled while it is in flight: a double click submits once. */
export function onSubmit(form, fn) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (form.dataset.busy) return;
    form.dataset.busy = '1';
    clearErrors(form);
    form.querySelector('.form-alert')?.setAttribute('hidden', '');
    const buttons = [...form.querySelectorAll('button')];
    for (const b of buttons) b.disabled = true;
    form.setAttribute('aria-busy', 'true');
    try {
      await fn(new FormData(form), event.submitter);
    } catch (error) {
      if (!error.code) throw error;
      showError(form, error, form.fieldFor);
    } finally {
      delete form.dataset.busy;
      form.removeAttribute('aria-busy');
      for (const b of buttons) b.disabled = false;
    }
  });
}

/** An Idempotency-Key per submission: kept while the answer is unknown (network error, 5xx, still in progress) so a
 * retry can never pay twice; replaced once the server answered definitely or the form's values change. */
export function idempotencyKeys(form) {
  let key = null;
  form.addEventListener('input', () => {
    key = null;
  });
  return async (send) => {
    key ??= crypto.randomUUID();
    try {
      const result = await send(key);
      key = null;
      return result;
    } catch (error) {
      if (error.status >= 400 && error.status < 500 && error.code !== 'IDEMPOTENCY_IN_PROGRESS') key = null;
      throw error;
    }
  };
}

const onScreen = new Map(); // key -> toast: one notification per thing (a deposit the page made and its event)

/** A short notification in the corner (in the role=status region): dismissable, gone by itself after `ms`, paused
 * while the pointer or the keyboard is on it. A `key` already on screen is not shown again. */
export function toast(text, kind = 'ok', { key = null, ms = 6000 } = {}) {
  if (key && onScreen.has(key)) return;
  const remove = () => {
    clearTimeout(timer);
    el.remove();
    if (key) onScreen.delete(key);
  };
  const el = h(
    'div',
    { class: `toast toast-${kind}` },
    h('span', {}, text),
    h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss', onclick: remove }, '×'),
  );
  let timer = setTimeout(remove, ms);
  const pause = () => clearTimeout(timer);
  const resume = () => {
    if (!el.matches(':hover, :focus-within')) timer = setTimeout(remove, ms);
  };
  for (const [type, fn] of [['mouseenter', pause], ['focusin', pause], ['mouseleave', resume], ['focusout', resume]]) {
    el.addEventListener(type, fn);
  }
  if (key) onScreen.set(key, el);
  document.getElementById('toasts').append(el);
}

export function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : '—';
}

/** A <dl> of [term, description] pairs. */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([dt, dd]) => [h('dt', {}, dt), h('dd', {}, dd)]));
}
