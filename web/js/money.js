// Money as decimal strings: never a float. Amounts are validated with a regex and formatted part by part, in the
// browser's locale both ways: "12,50" typed in a de-DE browser is 12.50, shown as "12,50 €".

const decimalSeparator = new Intl.NumberFormat().formatToParts(0.5).find((p) => p.type === 'decimal').value;

/** An amount as typed, in the API's form: spaces dropped, the locale's decimal separator as ".". */
export function typedAmount(text) {
  const plain = text.replace(/\s/g, '');
  return decimalSeparator === '.' ? plain : plain.replaceAll(decimalSeparator, '.');
}

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
      ? `Enter an amount such as 12${decimalSeparator}${'5'.padEnd(digits, '0')} (at most ${digits} decimal${digits > 1 ? 's' : ''}).`
      : 'Enter a whole amount such as 1200 (this currency has no decimals).';
  }
  if (/^[0.]*$/.test(text)) return 'Enter an amount above zero.';
  return null;
}

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
