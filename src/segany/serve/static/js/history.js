// One undo/redo history over every action on the page (prompts, accept, keep, drop, delete, relabel,
// edit). Each entry undoes and redoes itself; the server is the source of truth, so an entry about an
// annotation undoes with a request (an accept with DELETE, a delete with PUT restoring the same id, a
// relabel or an edit with PATCH back). Entries name their image: undoing one of another image opens
// that image first. Undo and redo run one at a time, in the order asked; a failed one leaves the
// history where it was (its error goes to the caller). An action that waits on the server (accept,
// keep, save, delete, relabel) takes its place in the history when it is asked, not when its answer
// comes, and runs in the same queue.

export class History {
  /** goTo(imageId): a promise that shows that image (a no-op when it is shown already). */
  constructor(goTo, onChange = () => {}) {
    this.goTo = goTo;
    this.onChange = onChange;
    this.entries = [];
    this.cursor = 0; // entries[0 .. cursor) are done; entries[cursor ..) can be redone
    this.queue = Promise.resolve();
    this.collecting = null; // entries recorded inside grouped()
    this.applying = false; // an undo or redo is running: what it does is not recorded again
  }

  /** Add a done action: {label, image, undo: async () => ..., redo: async () => ...}; drops the redo tail. */
  record(entry) {
    if (this.applying) return;
    if (this.collecting) {
      this.collecting.push(entry);
      return;
    }
    this.entries.length = this.cursor;
    this.entries.push(entry);
    this.cursor = this.entries.length;
    this.onChange();
  }

  /** Record entry where it is asked, then run action (its first doing, e.g. a save's request) in the
   * undo/redo queue: an undo asked while it is out waits for it, and steps made meanwhile keep their
   * order after it. An action that fails, or resolves to false (nothing was done), takes its entry
   * out again (an error goes to the caller). */
  perform(entry, action) {
    this.record(entry);
    const done = this.queue.then(async () => {
      let result;
      try {
        result = await action();
      } catch (error) {
        this.#forget(entry);
        throw error;
      }
      if (result === false) this.#forget(entry);
    });
    this.queue = done.catch(() => {});
    return done;
  }

  #forget(entry) {
    if (this.collecting && this.collecting.includes(entry)) { // inside grouped(): not part of the group
      this.collecting.splice(this.collecting.indexOf(entry), 1);
      return;
    }
    const index = this.entries.indexOf(entry);
    if (index < 0) return;
    this.entries.splice(index, 1);
    if (index < this.cursor) this.cursor -= 1;
    this.onChange();
  }

  /** Run fn; what it records becomes one entry (undone in reverse order), e.g. "keep all". */
  async grouped(label, image, fn) {
    const parts = [];
    const outer = this.collecting;
    this.collecting = parts;
    try {
      return await fn();
    } finally {
      this.collecting = outer;
      if (parts.length) {
        this.record({
          label, image,
          undo: async () => { for (const part of [...parts].reverse()) await part.undo(); },
          redo: async () => { for (const part of parts) await part.redo(); },
        });
      }
    }
  }

  get undoLabel() { return this.cursor > 0 ? this.entries[this.cursor - 1].label : null; }

  get redoLabel() { return this.cursor < this.entries.length ? this.entries[this.cursor].label : null; }

  /** Undo the last done entry; resolves to it (null when there is none). */
  undo() { return this.#apply(-1); }

  /** Redo the last undone entry; resolves to it (null when there is none). */
  redo() { return this.#apply(1); }

  #apply(direction) {
    const run = async () => {
      const entry = this.entries[direction < 0 ? this.cursor - 1 : this.cursor];
      if (!entry) return null;
      this.applying = true;
      try {
        await this.goTo(entry.image);
        await (direction < 0 ? entry.undo() : entry.redo());
      } finally {
        this.applying = false;
      }
      this.cursor += direction;
      this.onChange();
      return entry;
    };
    const done = this.queue.then(run);
    this.queue = done.catch(() => {});
    return done;
  }
}
