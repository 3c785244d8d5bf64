// What the API's fields accept, checked in the page before anything is sent, so every problem of a form shows at
// once under its field (the server checks again, and its words win where they differ).

export const USERNAME = /^[A-Za-z0-9_.-]{3,32}$/;
export const USERNAME_WORDS = 'A username is 3 to 32 letters, digits, _ . or -.';

/** The password policy's problems (wallet/identity/accounts.py), or [] when it is fine. */
export function passwordProblems(password, username) {
  const problems = [];
  const bytes = new TextEncoder().encode(password).length;
  if (bytes < 8 || bytes > 72) problems.push('Must be 8 to 72 bytes long.');
  if (/^[0-9]+$/.test(password)) problems.push('Must not be all digits.');
  if (username && password.toLowerCase() === username.toLowerCase()) problems.push('Must not equal the username.');
  return problems;
}

/** Why `text` is not a currency code, or null: "EURO" is refused in words, never cut to "EUR". */
export function currencyError(text) {
  return /^[A-Za-z]{3}$/.test(text) ? null : 'A currency is a 3-letter ISO code such as USD, EUR or NGN.';
}

/** Throw the VALIDATION_ERROR a form shows under its fields when `details` (field -> [words]) holds any. */
export function refuse(details) {
  const found = Object.fromEntries(Object.entries(details).filter(([, words]) => words.length));
  if (Object.keys(found).length) throw { code: 'VALIDATION_ERROR', details: found };
}
