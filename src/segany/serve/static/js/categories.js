// The project's categories: a list with colour, hotkey (1-9) and count; choose one (click, or
// Shift+1-9) for accepting and for keeping proposals; add, rename and merge (annotations keep
// their category ids; a merge moves them to the target's id).
import { api } from "./api.js";
import { colorOf, css } from "./masks.js";
import { focusable, setStatus } from "./status.js";

const $ = (id) => document.getElementById(id);
export const categoryState = { list: [], chosen: null }; // chosen: a category id, picked explicitly
let onChange = () => {};

/** ``changed()`` runs after a rename or merge (annotation names and ids may have moved). */
export function initCategories(changed) {
  onChange = changed;
  $("category-form").addEventListener("submit", (event) => {
    event.preventDefault();
    addCategory().catch((error) => setStatus(error.message, true));
  });
  $("rename-category").addEventListener("click", () => renameCategory().catch((error) => setStatus(error.message, true)));
  $("merge-category").addEventListener("click", () => mergeCategory().catch((error) => setStatus(error.message, true)));
}

export function categoryColor(id) {
  const category = categoryState.list.find((c) => c.id === id);
  return category && category.color ? category.color : colorOf(id);
}

export function chosenCategory() {
  return categoryState.list.find((c) => c.id === categoryState.chosen) || null;
}

export async function refreshCategories() {
  categoryState.list = await api("GET", "/api/categories");
  if (!chosenCategory()) categoryState.chosen = null;
  $("categories").replaceChildren(...categoryState.list.map((c) => Object.assign(document.createElement("option"), { value: c.name })));
  renderCategories();
}

export function renderCategories() {
  const list = $("category-list");
  list.replaceChildren();
  for (const c of categoryState.list) {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    const swatch = Object.assign(document.createElement("span"), { className: "swatch" });
    swatch.style.background = css(categoryColor(c.id));
    const name = Object.assign(document.createElement("span"), { className: "grow", textContent: c.name });
    const count = Object.assign(document.createElement("span"), { className: "muted", textContent: String(c.annotations) });
    const key = Object.assign(document.createElement("span"), { className: "key", textContent: c.hotkey ? String(c.hotkey) : "" });
    li.append(swatch, name, count, key);
    li.classList.toggle("selected", c.id === categoryState.chosen);
    li.title = c.hotkey ? `${c.name}: Shift+${c.hotkey} chooses it, ${c.hotkey} keeps the focused proposal as it` : c.name;
    focusable(li, () => choose(c.id === categoryState.chosen ? null : c.id));
    list.append(li);
  }
  const chosen = chosenCategory();
  $("rename-category").disabled = $("merge-category").disabled = !chosen;
  $("chosen-category").textContent = chosen ? chosen.name : "none";
  $("categories-panel").classList.remove("ask");
}

/** Choose a category by id (null: none); it fills the accept form's field. */
export function choose(id) {
  categoryState.chosen = id;
  const chosen = chosenCategory();
  if (chosen) $("category").value = chosen.name;
  renderCategories();
}

/** The category with this hotkey (1-9), or null. */
export function byHotkey(digit) {
  return categoryState.list.find((c) => c.hotkey === digit) || null;
}

/** No category chosen: say so and point at the list (never fall back to what is typed). */
export function askForCategory(what) {
  $("categories-panel").classList.add("ask");
  setStatus(`choose a category to ${what}: press 1-9 or click one under Categories`, true);
}

async function addCategory() {
  const name = $("category-name").value.trim();
  if (!name) return;
  const made = await api("POST", "/api/categories", { name });
  $("category-name").value = "";
  await refreshCategories();
  choose(made.id);
  setStatus(`category ${made.name} added`);
}

async function renameCategory() {
  const chosen = chosenCategory();
  const name = $("category-name").value.trim();
  if (!chosen || !name) {
    setStatus("choose a category and type its new name", true);
    return;
  }
  const renamed = await api("PATCH", `/api/categories/${chosen.id}`, { name });
  $("category-name").value = "";
  await refreshCategories();
  choose(renamed.id);
  setStatus(`category ${chosen.name} is now ${renamed.name}`);
  await onChange();
}

async function mergeCategory() {
  const chosen = chosenCategory();
  const target = categoryState.list.find((c) => c.name === $("category-name").value.trim());
  if (!chosen || !target) {
    setStatus("choose a category and type the name of the one to merge it into", true);
    return;
  }
  const merged = await api("POST", `/api/categories/${chosen.id}/merge`, { into: target.id });
  $("category-name").value = "";
  await refreshCategories();
  choose(merged.id);
  setStatus(`${chosen.name} merged into ${merged.name} (${merged.annotations} annotations)`);
  await onChange();
}
