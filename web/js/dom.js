// DOM helpers: elements built with text nodes (never innerHTML, so API data cannot inject markup), form fields,
// errors shown where they belong, submissions that cannot run twice, toasts, times by day, and shared links.

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

/** A second step before something that cannot be undone: `actions`' buttons give way to `question`, an `extra`
 * field, the `yes` button (which runs `run(data)` as a one-submission form) and `no`, which brings them back. */
export function askFirst(actions, { question, yes, no = 'Cancel', extra = null, run }) {
  const buttons = [...actions.children];
  const form = h(
    'form',
    { class: 'inline-confirm', novalidate: true },
    h('p', {}, question),
    extra,
    formAlert(),
    h('button', { type: 'submit', class: 'danger' }, yes),
    h('button', { type: 'button', onclick: () => actions.replaceChildren(...buttons) }, no),
  );
  onSubmit(form, run);
  actions.replaceChildren(form);
  form.querySelector('select, button')?.focus();
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

const MAX_TOASTS = 3;
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
  const toasts = document.getElementById('toasts');
  toasts.append(el);
  // At most three at once: older ones go (the close button of each runs its own clean-up) rather than pile up
  // over the page's fields; one the person is reading (pointer or focus on it) stays.
  const older = [...toasts.children].slice(0, -MAX_TOASTS).filter((t) => !t.matches(':hover, :focus-within'));
  for (const old of older) old.querySelector('.toast-close').click();
}

export function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : '—';
}

/** The local day of a moment, as a key two moments of the same day share. */
export function dayKey(date) {
  return `${date.getFullYear()}-${date.getMonth() + 1}-${date.getDate()}`;
}

/** A day's heading in the browser's locale: "Today", "Yesterday", else "Friday, December 4" (with the year when it
 * is not this one). */
export function dayTitle(date, now = new Date()) {
  const yesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
  if (dayKey(date) === dayKey(now)) return 'Today';
  if (dayKey(date) === dayKey(yesterday)) return 'Yesterday';
  const year = date.getFullYear() === now.getFullYear() ? undefined : 'numeric';
  return date.toLocaleDateString(undefined, { weekday: 'long', month: 'long', day: 'numeric', year });
}

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

/** When something happened, for a list grouped by day: relative while recent ("5 minutes ago", up to 6 hours),
 * then the time of day; the exact moment is the <time>'s datetime and its title. */
export function timeAgo(iso, now = new Date()) {
  const date = new Date(iso);
  const ago = now - date;
  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
  const text =
    ago < MINUTE
      ? relative.format(0, 'second')
      : ago < HOUR
        ? relative.format(-Math.floor(ago / MINUTE), 'minute')
        : ago < 6 * HOUR
          ? relative.format(-Math.floor(ago / HOUR), 'hour')
          : date.toLocaleTimeString(undefined, { timeStyle: 'short' });
  const exact = date.toLocaleString(undefined, { dateStyle: 'full', timeStyle: 'medium' });
  return h('time', { datetime: iso, title: exact }, text);
}

/** A link to one of the web wallet's pages as the API gives it (GET .../link: {link, qr_code}), to share: the QR
 * code (an <img> of the server's SVG, named `name`) and the link itself beside it, to copy. */
export function shareCode({ link, qr_code }, name) {
  return h(
    'figure',
    { class: 'share' },
    h('img', { class: 'qr', src: qr_code, alt: name }),
    h('figcaption', {}, h('code', { class: 'mono share-link' }, link)),
  );
}

/** A <dl> of [term, description] pairs. */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([dt, dd]) => [h('dt', {}, dt), h('dd', {}, dd)]));
}
