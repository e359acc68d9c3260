// The module's view of the catalog (entity ref -> uid and etag) and the diff
// of two views.

/** What one poll knows about one entity. */
export interface ViewEntry {
  uid: string;
  etag: string;
}

/** Entity ref (lower-case `kind:namespace/name`) -> uid and etag. */
export type CatalogView = Map<string, ViewEntry>;

/** What changed between the view the sidecar acknowledged and the catalog now. */
export interface ViewDiff {
  /** Refs that are new, or whose etag or uid changed. */
  upserts: string[];
  /** Refs that are gone, with the uid the sidecar last heard of. */
  deletes: { ref: string; uid: string }[];
}

/**
 * The canonical, lower-case ref of an entity as the catalog lists it
 * (`kind:namespace/name`; the namespace defaults to `default`). Returns
 * undefined for an item without kind or name.
 */
export function refOf(entity: { kind?: unknown; metadata?: { namespace?: unknown; name?: unknown } }): string | undefined {
  const kind = entity.kind;
  const name = entity.metadata?.name;
  if (typeof kind !== 'string' || !kind || typeof name !== 'string' || !name) {
    return undefined;
  }
  const ns = entity.metadata?.namespace;
  const namespace = typeof ns === 'string' && ns ? ns : 'default';
  return `${kind}:${namespace}/${name}`.toLocaleLowerCase('en-US');
}

/**
 * Compares only the given refs of the acknowledged view and the current one
 * (for a current view known to differ from the acknowledged one in those
 * refs at most, with nothing deleted): the cost of a poll without changes
 * does not grow with the catalog.
 */
export function diffRefs(known: CatalogView, current: CatalogView, refs: Iterable<string>): ViewDiff {
  const upserts: string[] = [];
  for (const ref of new Set(refs)) {
    const now = current.get(ref);
    const before = known.get(ref);
    if (now && (!before || before.etag !== now.etag || before.uid !== now.uid)) {
      upserts.push(ref);
    }
  }
  return { upserts, deletes: [] };
}

/**
 * Compares the acknowledged view with the current one. Keyed by ref: an
 * entity that was deleted and re-added under the same ref (new uid) is an
 * upsert, never a delete, so the sidecar never removes an entity that exists.
 */
export function diffViews(known: CatalogView, current: CatalogView): ViewDiff {
  const upserts: string[] = [];
  const deletes: { ref: string; uid: string }[] = [];
  for (const [ref, now] of current) {
    const before = known.get(ref);
    if (!before || before.etag !== now.etag || before.uid !== now.uid) {
      upserts.push(ref);
    }
  }
  for (const [ref, before] of known) {
    if (!current.has(ref)) {
      deletes.push({ ref, uid: before.uid });
    }
  }
  return { upserts, deletes };
}
