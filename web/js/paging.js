// Lists the API pages by cursor: the first page, and "Load more" for each next one while there is one.
import { h, messageFor, toast } from './dom.js';
import { keepPage } from './router.js';

export const PAGE_SIZE = 20;

/** A list of what `fetchPage(query)` answers ({items, next_cursor}; `query` holds limit and cursor), `render(item)`
 * making one <li>, named `label`; `empty` (text or elements) shows when there is nothing. Answers the elements to
 * place, once the first page is in. More pages keep the page on screen from a live redraw (keepPage), which would
 * start again from the first. */
export async function pagedList(fetchPage, render, { label, empty }) {
  const list = h('ul', { class: 'plain-list', 'aria-label': label });
  const none = h('p', { class: 'muted empty', hidden: true }, empty);
  const more = h('button', { type: 'button', class: 'more' }, 'Load more');
  let cursor = null;
  const load = async () => {
    more.disabled = true;
    const page = await fetchPage({ limit: PAGE_SIZE, cursor });
    list.append(...page.items.map(render));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    more.disabled = false;
    none.hidden = list.children.length > 0;
  };
  more.addEventListener('click', () => {
    keepPage();
    load().catch((error) => {
      more.disabled = false;
      toast(messageFor(error), 'error');
    });
  });
  await load();
  return [list, none, more];
}
