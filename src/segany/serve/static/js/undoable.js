// The page's actions as entries of its one history (js/history.js): what undoing and redoing each
// does. Prompt steps are local (undo shows the prompts and their masks as they were); an accepted or
// kept annotation undoes with DELETE and redoes with PUT /api/annotations/{id}, which restores it
// under its own id (as does undoing a delete); dropped proposals come back where they were.
import { api } from "./api.js";
import { History } from "./history.js";

/** page: {state, refresh, openImage(index), dropProposal() (drops the focused one), onChange(history)}. */
export function createUndoable(page) {
  const { state, refresh } = page;
  const history = new History(goToImage, () => page.onChange(history));

  async function goToImage(imageId) {
    if (state.image && state.image.id === imageId) return;
    const index = state.images.findIndex((image) => image.id === imageId);
    if (index < 0) throw new Error(`image ${imageId} is no longer served`);
    await page.openImage(index);
  }

  const prompts = () => ({ steps: state.steps, cursor: state.cursor });

  function showPrompts({ steps, cursor }) {
    state.steps = steps;
    state.cursor = cursor;
    refresh();
  }

  /** Record the prompts' change since before (a prompts() taken then). */
  function recordPrompts(label, before) {
    const after = prompts();
    history.record({ label, image: state.image.id, undo: () => showPrompts(before), redo: () => showPrompts(after) });
  }

  async function unsave(ann) {
    await api("DELETE", `/api/annotations/${ann.id}`);
    state.annotations = state.annotations.filter((a) => a.id !== ann.id);
    state.images[state.index].annotations -= 1;
    if (state.selected === ann.id) state.selected = null;
    refresh();
  }

  async function resave(ann) {
    const body = { image: state.image.id, category: ann.category, rle: ann.segmentation, score: ann.score ?? null };
    const back = await api("PUT", `/api/annotations/${ann.id}`, body);
    state.annotations = [...state.annotations, back].sort((a, b) => a.id - b.id);
    state.images[state.index].annotations += 1;
    refresh();
  }

  /** The entry of a saved annotation (annOf() gives it): undo deletes it, then undo(); redo restores
   * it, then redo(). */
  function savedEntry(label, annOf, undo, redo) {
    return {
      get label() { return annOf() ? `${label} #${annOf().id}` : label; }, image: state.image.id,
      undo: async () => { await unsave(annOf()); undo(); },
      redo: async () => { await resave(annOf()); redo(); },
    };
  }

  /** Save an annotation (save() resolves to it, or to null: nothing saved) undoably, the step in the
   * history from the moment it is asked (see savedEntry); resolves to the annotation. */
  async function performSaved(label, save, undo, redo) {
    let ann = null;
    await history.perform(savedEntry(label, () => ann, undo, redo), async () => {
      ann = await save();
      return ann !== null;
    });
    return ann;
  }

  /** Delete an annotation, undoably (the step is in the history from the moment it is asked). */
  async function remove(ann) {
    await history.perform({ label: `delete #${ann.id}`, image: state.image.id, undo: () => resave(ann),
      redo: () => unsave(ann) }, () => unsave(ann));
  }

  /** Relabel an annotation with PATCH, undoably (in the history from the moment it is asked);
   * resolves to the server's answer. */
  async function relabel(id, name, apply) {
    const label = async (category) => apply(await api("PATCH", `/api/annotations/${id}`, { category }));
    let before = null, updated = null; // its category when the request goes out (after any still out before it)
    await history.perform({ label: `relabel #${id}`, image: state.image.id, undo: () => label(before),
      redo: () => label(name) }, async () => {
      before = state.annotations.find((a) => a.id === id).category;
      updated = await label(name);
    });
    return updated;
  }

  function insertProposal(at, proposal) {
    state.proposals.splice(Math.min(at, state.proposals.length), 0, proposal);
    state.focused = state.proposals.indexOf(proposal);
    refresh();
  }

  function removeProposal(proposal) {
    const at = state.proposals.indexOf(proposal);
    if (at < 0) return;
    state.focused = at;
    page.dropProposal();
  }

  /** Keep a proposal (the focused one, at index at) as the annotation save() resolves to, undoably:
   * it leaves the list at once (a second keep takes the next one) and comes back if the save fails. */
  async function performKept(proposal, at, save) {
    page.dropProposal();
    try {
      return await performSaved("keep", save, () => insertProposal(at, proposal), () => removeProposal(proposal));
    } catch (error) {
      insertProposal(at, proposal);
      throw error;
    }
  }

  /** Drop the focused proposal, undoably. */
  function dropFocused() {
    const proposal = state.proposals[state.focused];
    if (!proposal) return;
    const at = state.focused;
    page.dropProposal();
    history.record({ label: "drop proposal", image: state.image.id, undo: () => insertProposal(at, proposal),
                     redo: () => removeProposal(proposal) });
  }

  /** Drop every proposal, undoably. */
  function dropAll() {
    const before = state.proposals;
    if (!before.length) return;
    const show = (proposals) => { state.proposals = proposals; state.focused = 0; refresh(); };
    show([]);
    history.record({ label: `drop ${before.length} proposals`, image: state.image.id, undo: () => show(before),
                     redo: () => show([]) });
  }

  return { history, prompts, showPrompts, recordPrompts, performSaved, performKept, remove, relabel, dropFocused, dropAll };
}
