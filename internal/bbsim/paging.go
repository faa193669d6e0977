package bbsim

import (
	"fmt"
	"net/http"
	"strconv"
)

// pageJSON is Bitbucket's paged envelope. next and previous are absolute URLs
// built from the request's own host, so they stay followable behind any
// listener (httptest, a port-forward, the demo).
type pageJSON[T any] struct {
	PageLen  int    `json:"pagelen"`
	Size     int    `json:"size"`
	Page     int    `json:"page"`
	Values   []T    `json:"values"`
	Next     string `json:"next,omitempty"`
	Previous string `json:"previous,omitempty"`
}

// pageParams reads page (1-based) and pagelen. Bitbucket caps pagelen at 100
// rather than refusing larger values.
func pageParams(r *http.Request) (page, pageLen int, err error) {
	page, pageLen = 1, defaultPageLen
	q := r.URL.Query()
	if v := q.Get("page"); v != "" {
		page, err = strconv.Atoi(v)
		if err != nil || page < 1 {
			return 0, 0, fmt.Errorf("invalid page %q", v)
		}
	}
	if v := q.Get("pagelen"); v != "" {
		pageLen, err = strconv.Atoi(v)
		if err != nil || pageLen < 1 {
			return 0, 0, fmt.Errorf("invalid pagelen %q", v)
		}
		pageLen = min(pageLen, maxPageLen)
	}
	return page, pageLen, nil
}

func writePage[T any](w http.ResponseWriter, r *http.Request, items []T) {
	page, pageLen, err := pageParams(r)
	if err != nil {
		writeErrorDetail(w, http.StatusBadRequest, "Bad request", err.Error())
		return
	}
	start := min((page-1)*pageLen, len(items))
	end := min(start+pageLen, len(items))
	out := pageJSON[T]{PageLen: pageLen, Size: len(items), Page: page, Values: items[start:end]}
	if out.Values == nil {
		out.Values = []T{}
	}
	if end < len(items) {
		out.Next = pageURL(r, page+1)
	}
	if page > 1 {
		out.Previous = pageURL(r, page-1)
	}
	writeJSON(w, http.StatusOK, out)
}

// pageURL is the request's own absolute URL with another page number; every
// other query parameter (pagelen, sort, repeated status filters) is kept.
func pageURL(r *http.Request, page int) string {
	q := r.URL.Query()
	q.Set("page", strconv.Itoa(page))
	return baseURL(r) + r.URL.EscapedPath() + "?" + q.Encode()
}

func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if proto := r.Header.Get("X-Forwarded-Proto"); proto == "http" || proto == "https" {
		scheme = proto
	}
	return scheme + "://" + r.Host
}
