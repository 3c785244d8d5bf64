// Money as decimal strings: never a float. Amounts are validated with a regex and formatted part by part.

/** Minor digits of a currency, read from an amount the API gave in it ("10.50" -> 2, "1000" -> 0). */
export function digitsOf(amount) {
  const dot = amount.indexOf('.');
  return dot < 0 ? 0 : amount.length - dot - 1;
}

/** Why `text` is not a valid positive amount with at most `digits` decimals, or null when it is. */
export function amountError(text, digits) {
  const pattern = digits > 0 ? new RegExp(`^[0-9]{1,15}(\\.[0-9]{1,${digits}})?$`) : /^[0-9]{1,15}$/;
  if (!pattern.test(text)) {
    return digits > 0
      ? `Enter an amount such as 12.${'5'.padEnd(digits, '0')} (at most ${digits} decimal${digits > 1 ? 's' : ''}).`
      : 'Enter a whole amount such as 1200 (this currency has no decimals).';
  }
  if (/^[0.]*$/.test(text)) return 'Enter an amount above zero.';
  return null;
}

const decimalSeparator = new Intl.NumberFormat().formatToParts(0.5).find((p) => p.type === 'decimal').value;

/** "1234.50", "USD" -> "$1,234.50": the integer part through Intl.NumberFormat as a BigInt, the fraction as given. */
export function formatMoney(amount, currency) {
  const [whole, fraction = ''] = amount.split('.');
  let parts;
  try {
    parts = new Intl.NumberFormat(undefined, {
      style: 'currency',
      currency,
      minimumFractionDigits: 0,
      maximumFractionDigits: 0,
    }).formatToParts(BigInt(whole));
  } catch {
    return `${amount} ${currency}`;
  }
  const lastInteger = parts.findLastIndex((p) => p.type === 'integer');
  return parts
    .map((p, i) => (i === lastInteger && fraction ? `${p.value}${decimalSeparator}${fraction}` : p.value))
    .join('');
}
