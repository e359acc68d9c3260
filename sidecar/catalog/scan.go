package catalog

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// VersionFields are the fields a Versions listing reads: enough to name an
// entity and tell whether it changed.
var VersionFields = []string{"kind", "metadata.namespace", "metadata.name", "metadata.uid", "metadata.etag"}

// Version is one entity as a cheap listing sees it: its canonical ref
// (lower-case kind:namespace/name), uid and etag. The etag changes whenever
// the entity's stitched output changes, relations included.
type Version struct {
	Ref  string
	UID  string
	Etag string
}

// ScanResult is what a scan saw. Read it after the iteration ended.
type ScanResult struct {
	// TotalItems is the catalog's count of matches when the scan began
	// (the first page's totalItems; later pages repeat it); -1 when the
	// query excluded it or no page arrived.
	TotalItems int
	Seen       int // items yielded to the caller
	// Skipped counts whole entities left out for the input limits; they
	// exist, so they count toward TotalItems in Err.
	Skipped int
	Pages   int // pages received
	// Finished: the last page (one without a next cursor) arrived and
	// every page before it succeeded. False after an error or when the
	// caller stopped early.
	Finished bool
}

// ErrScanNotFinished is ScanResult.Err for a scan that failed or was
// stopped before its last page.
var ErrScanNotFinished = errors.New("catalog scan did not reach its last page")

// ShortScanError is ScanResult.Err for a scan whose last page came before
// it saw totalItems entities: entities were deleted during the scan, or
// the catalog ended the scan early. Only the caller knows which (e.g. from
// deletions it observed meanwhile).
type ShortScanError struct {
	TotalItems, Seen int
}

func (e *ShortScanError) Error() string {
	return fmt.Sprintf("catalog scan ended after %d entities, but the catalog counted %d when it began", e.Seen, e.TotalItems)
}

// Err is nil when the scan finished and saw at least TotalItems entities
// (more means entities were added during the scan; keyset paging by uid
// shows an added entity when its uid sorts after the cursor). Otherwise it
// is ErrScanNotFinished or a *ShortScanError.
func (r ScanResult) Err() error {
	if !r.Finished {
		return ErrScanNotFinished
	}
	if r.TotalItems >= 0 && r.Seen+r.Skipped < r.TotalItems {
		return &ShortScanError{TotalItems: r.TotalItems, Seen: r.Seen + r.Skipped}
	}
	return nil
}

// Scan is one pass over the catalog through by-query cursor paging, one
// page ahead of its caller. Range over Entities or Versions once, then read
// Result.
type Scan struct {
	c    *Client
	ctx  context.Context
	q    Query
	res  *ScanResult // q.Stats when the caller gave one
	used bool
}

// Scan prepares a scan; nothing is requested before the iteration starts.
func (c *Client) Scan(ctx context.Context, q Query) *Scan {
	res := q.Stats
	if res == nil {
		res = new(ScanResult)
	}
	*res = ScanResult{TotalItems: -1}
	return &Scan{c: c, ctx: ctx, q: q, res: res}
}

// Result is what the scan saw; complete once the iteration ended.
func (s *Scan) Result() ScanResult { return *s.res }

// Entities yields whole entities (or the projection q.Fields asks for). A
// whole entity without kind or metadata.name fails the scan.
func (s *Scan) Entities() iter.Seq2[Entity, error] {
	return func(yield func(Entity, error) bool) {
		whole := len(s.q.Fields) == 0
		var over *LimitError
		for p, err := range scanPages[Entity](s, s.q) {
			if err != nil {
				yield(nil, err)
				return
			}
			for i, e := range p.items {
				if e == nil {
					yield(nil, &MalformedResponseError{URL: p.url, Reason: fmt.Sprintf("page %d item %d is null", p.n, i)})
					return
				}
				p.items[i] = nil // let the caller's copy be the only reference
				if whole {
					ref, err := RefOf(e)
					if err != nil {
						yield(nil, &MalformedResponseError{URL: p.url, Reason: fmt.Sprintf("page %d item %d (uid %v)", p.n, i, uidOf(e)), Err: err})
						return
					}
					if v := s.c.limits.CheckEntity(e); v != nil {
						over = s.c.skip(s.ctx, over, ref.String(), e, v, scanRefs)
						s.res.Skipped++
						if s.q.OnSkip != nil {
							s.q.OnSkip(ref.String())
						}
						continue
					}
				}
				s.res.Seen++
				if !yield(e, nil) {
					return
				}
			}
			if p.last {
				s.res.Finished = true
				if over != nil && s.q.OnSkip == nil {
					yield(nil, over)
				}
			}
		}
	}
}

// versionItem is an item of a listing with VersionFields.
type versionItem struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
		UID       string `json:"uid"`
		Etag      string `json:"etag"`
	} `json:"metadata"`
}

// Versions yields the ref, uid and etag of every matching entity, reading
// only VersionFields (q.Fields is ignored): a fraction of the bytes and of
// the decoding of whole entities. An item without kind, name or uid fails
// the scan.
func (s *Scan) Versions() iter.Seq2[Version, error] {
	return func(yield func(Version, error) bool) {
		q := s.q
		q.Fields = VersionFields
		for p, err := range scanPages[versionItem](s, q) {
			if err != nil {
				yield(Version{}, err)
				return
			}
			for i, it := range p.items {
				md := it.Metadata
				ns := md.Namespace
				if ns == "" {
					ns = DefaultNamespace
				}
				if it.Kind == "" || md.Name == "" || md.UID == "" {
					yield(Version{}, &MalformedResponseError{URL: p.url, Reason: fmt.Sprintf("page %d item %d (uid %q) lacks kind, metadata.name or metadata.uid", p.n, i, md.UID)})
					return
				}
				ref, err := ParseRef(it.Kind+":"+ns+"/"+md.Name, "")
				if err != nil {
					yield(Version{}, &MalformedResponseError{URL: p.url, Reason: fmt.Sprintf("page %d item %d (uid %s)", p.n, i, md.UID), Err: err})
					return
				}
				s.res.Seen++
				if !yield(Version{Ref: ref.String(), UID: md.UID, Etag: md.Etag}, nil) {
					return
				}
			}
			if p.last {
				s.res.Finished = true
			}
		}
	}
}

// page is one by-query page as decoded.
type page[T any] struct {
	Items      *[]T `json:"items"`
	TotalItems *int `json:"totalItems"`
	PageInfo   struct {
		NextCursor string `json:"nextCursor"`
	} `json:"pageInfo"`
}

// fetched is a page handed from the fetching goroutine to the scan.
type fetched[T any] struct {
	n     int // page number from 0
	url   string
	items []T
	total int
	last  bool // no next cursor
	err   error
}

// scanPages yields the pages of a query in order. A goroutine fetches
// page k+1 while the caller handles page k and then waits to hand it over,
// so at most two pages are decoded at once. An error ends the pages, after
// every page before it. Stopping early, or the context ending, stops the
// goroutine before scanPages returns.
func scanPages[T any](s *Scan, q Query) iter.Seq2[*fetched[T], error] {
	return func(yield func(*fetched[T], error) bool) {
		if s.used {
			yield(nil, errors.New("catalog scan: a Scan can be iterated only once"))
			return
		}
		s.used = true
		c := s.c
		ctx, cancel := context.WithCancel(s.ctx)
		ch := make(chan *fetched[T])
		var wg sync.WaitGroup
		wg.Go(func() {
			defer close(ch)
			params := url.Values{}
			params.Set("limit", strconv.Itoa(c.pageSize))
			for _, f := range q.Filters {
				params.Add("filter", f)
			}
			if q.OrderField != "" {
				params.Set("orderField", q.OrderField)
			}
			if len(q.Fields) > 0 {
				params.Set("fields", strings.Join(q.Fields, ","))
			}
			if q.ExcludeTotal {
				params.Set("totalItems", "exclude")
			}
			for n := 0; ; n++ {
				u := c.base + "/entities/by-query?" + params.Encode()
				f := &fetched[T]{n: n, url: u}
				var p page[T]
				switch err := c.do(ctx, "by-query", http.MethodGet, u, nil, &p); {
				case err != nil:
					f.err = fmt.Errorf("scan catalog page %d: %w", n, err)
				case p.Items == nil || p.TotalItems == nil:
					f.err = &MalformedResponseError{URL: u, Reason: fmt.Sprintf("page %d has no items or totalItems", n)}
				case len(*p.Items) == 0 && p.PageInfo.NextCursor != "":
					f.err = &MalformedResponseError{URL: u, Reason: fmt.Sprintf("page %d is empty but has a next cursor", n)}
				default:
					f.items, f.total, f.last = *p.Items, *p.TotalItems, p.PageInfo.NextCursor == ""
				}
				select {
				case ch <- f:
				case <-ctx.Done():
					return
				}
				if f.err != nil || f.last {
					return
				}
				next := url.Values{}
				next.Set("cursor", p.PageInfo.NextCursor)
				next.Set("limit", strconv.Itoa(c.pageSize))
				if len(q.Fields) > 0 {
					next.Set("fields", strings.Join(q.Fields, ","))
				}
				params = next
			}
		})
		defer func() {
			cancel()
			for range ch { // drain, so the fetcher can exit
			}
			wg.Wait()
		}()
		ended := false
		for f := range ch {
			if f.err != nil {
				yield(nil, f.err)
				return
			}
			if f.n == 0 && !q.ExcludeTotal {
				s.res.TotalItems = f.total
			}
			s.res.Pages++
			ended = f.last
			if !yield(f, nil) || ended {
				return
			}
		}
		if !ended {
			err := ctx.Err()
			if err == nil {
				err = errors.New("page fetcher stopped")
			}
			yield(nil, fmt.Errorf("scan catalog: stopped after %d pages: %w", s.res.Pages, err))
		}
	}
}

// Fetched is one entity read by ref: Entity is nil when no entity has the
// ref (any more), or when it is over the input limits; Skipped then says
// which limit (the entity exists: a caller must not take it for deleted).
type Fetched struct {
	Ref     string // canonical
	Entity  Entity
	Skipped string
}

// FetchByRefs reads whole entities (or the projection fields asks for) by
// ref through by-refs, in requests of the page size, fetching the next
// chunk while the caller handles the current one. It yields one Fetched per
// ref, in order; an error ends it. Whole entities over the input limits are
// logged and counted as the scan does, and yielded with Skipped set. Refs may be in any form ParseRef accepts
// with a kind.
func (c *Client) FetchByRefs(ctx context.Context, refs []string, fields []string) iter.Seq2[Fetched, error] {
	return func(yield func(Fetched, error) bool) {
		canon := make([]string, len(refs))
		for i, r := range refs {
			ref, err := ParseRef(r, "")
			if err != nil {
				yield(Fetched{}, fmt.Errorf("read entities by refs: ref %d: %w", i, err))
				return
			}
			canon[i] = ref.String()
		}
		type chunk struct {
			start int
			items []Entity
			err   error
		}
		ctx, cancel := context.WithCancel(ctx)
		ch := make(chan chunk)
		var wg sync.WaitGroup
		wg.Go(func() {
			defer close(ch)
			for start := 0; start < len(canon); start += c.pageSize {
				part := canon[start:min(start+c.pageSize, len(canon))]
				items, err := c.byRefs(ctx, part, fields, start)
				select {
				case ch <- chunk{start, items, err}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		})
		defer func() {
			cancel()
			for range ch { // drain, so the fetcher can exit
			}
			wg.Wait()
		}()
		done := 0
		for ck := range ch {
			if ck.err != nil {
				yield(Fetched{}, ck.err)
				return
			}
			for i, e := range ck.items {
				ck.items[i] = nil
				done++
				f := Fetched{Ref: canon[ck.start+i], Entity: e}
				if e != nil && len(fields) == 0 {
					if v := c.limits.CheckEntity(e); v != nil {
						c.skip(ctx, nil, f.Ref, e, v, 0)
						f.Entity, f.Skipped = nil, v.Error()
					}
				}
				if !yield(f, nil) {
					return
				}
			}
		}
		if done < len(canon) {
			err := ctx.Err()
			if err == nil {
				err = errors.New("fetcher stopped")
			}
			yield(Fetched{}, fmt.Errorf("read entities by refs: stopped after %d of %d: %w", done, len(canon), err))
		}
	}
}

// byRefs makes one by-refs request; start names the chunk in errors.
func (c *Client) byRefs(ctx context.Context, refs, fields []string, start int) ([]Entity, error) {
	u := c.base + "/entities/by-refs"
	body := struct {
		EntityRefs []string `json:"entityRefs"`
		Fields     []string `json:"fields,omitempty"`
	}{refs, fields}
	var res struct {
		Items *[]Entity `json:"items"`
	}
	if err := c.do(ctx, "by-refs", http.MethodPost, u, body, &res); err != nil {
		return nil, fmt.Errorf("read entities by refs %d..%d: %w", start, start+len(refs)-1, err)
	}
	if res.Items == nil || len(*res.Items) != len(refs) {
		n := -1
		if res.Items != nil {
			n = len(*res.Items)
		}
		return nil, &MalformedResponseError{URL: u, Reason: fmt.Sprintf("asked for %d refs, got %d items", len(refs), n)}
	}
	return *res.Items, nil
}
