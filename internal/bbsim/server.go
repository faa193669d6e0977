package bbsim

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Demo identity used when Options leaves the workspace or credentials empty.
// The UUIDs are fixed so that scripts and tests can hard-code them.
const (
	DefaultClientID       = "bbsim-client"
	DefaultClientSecret   = "bbsim-secret"
	DefaultWorkspaceUUID  = "{5b2f6c1e-8d4a-4e3b-9f21-7a6c0d9e4b10}"
	DefaultRepositoryUUID = "{c3e9a7d2-1f6b-4a8e-b5d0-2e7f9c4a6b31}"
	DefaultWorkspaceSlug  = "demo"
	DefaultRepositorySlug = "app"
)

// Defaults that mirror Bitbucket Cloud's documented numbers.
const (
	// OAuth access tokens live 7200 s (Atlassian staff, developer community thread 22136).
	defaultTokenTTL = 2 * time.Hour
	// 1,000 requests per rolling hour per credential (api-request-limits doc).
	defaultHourlyLimit = 1000
	// 100 runners per workspace and per repository (autoscaler README "Limitation").
	defaultRunnerLimit = 100
	defaultConnect     = time.Second
	// Paged /2.0 lists default to 10 and cap at 100 values per page.
	defaultPageLen = 10
	maxPageLen     = 100

	// schedulerPeriod bounds how late a time-driven event (a step reaching its
	// duration, an agent finishing its connect delay) is noticed.
	schedulerPeriod = 10 * time.Millisecond

	noMatchWait = "wait"
	noMatchFail = "fail"
)

// Repository is a repository of a simulated workspace.
type Repository struct {
	UUID string `json:"uuid"`
	Slug string `json:"slug"`
}

// Workspace is a simulated workspace and its repositories.
type Workspace struct {
	UUID         string       `json:"uuid"`
	Slug         string       `json:"slug"`
	Repositories []Repository `json:"repositories"`
}

// WebhookTarget is a loopback URL that receives commit-status events. When
// Secret is set, deliveries are signed with X-Hub-Signature.
type WebhookTarget struct {
	URL    string `json:"url"`
	Secret string `json:"secret,omitempty"`
}

// Options configures a Server. The zero value gives a usable demo.
type Options struct {
	Workspaces     []Workspace       // default: one demo workspace with one repository
	OAuthConsumers map[string]string // client id -> secret; default {"bbsim-client": "bbsim-secret"}
	AccessTokens   []string          // Bearer tokens accepted as workspace access tokens
	ReadOnlyTokens []string          // Bearer tokens that get 403 on writes
	BasicUsers     map[string]string // user -> app password / API token
	TokenTTL       time.Duration     // default 2h
	HourlyLimit    int               // per credential, default 1000; <0 disables
	RetryAfter     time.Duration     // when >0, 429 answers carry Retry-After
	RunnerLimit    int               // default 100
	NoMatch        string            // "wait" (default) or "fail"
	ConnectDelay   time.Duration     // agent connect delay, default 1s; <0 means none
	Faults         Faults
	Webhooks       []WebhookTarget
	Now            func() time.Time // optional clock
	Logger         logr.Logger
}

// Server is the simulator. It implements http.Handler.
type Server struct {
	opts   Options
	log    logr.Logger
	now    func() time.Time
	mux    *http.ServeMux
	faults *faultInjector
	hooks  *webhookSender

	stop     chan struct{}
	wake     chan struct{}
	loopDone chan struct{}
	once     sync.Once

	mu sync.Mutex
	// Everything below is guarded by mu.
	workspaces     []*workspace
	tokens         map[string]*issuedToken
	limiter        *rateLimiter
	calls          map[string]int
	tokenRequests  map[string]int
	callsByCred    map[string]map[string]int
	rateLimitHits  map[string]int
	throttled      map[string]bool // credentials answered 429 to every call (Throttle)
	runners        map[string]*runner
	runnerOrder    []*runner
	steps          map[string]*step
	stepOrder      []*step
	queue          []*step
	pipelines      map[string]*pipeline
	agentPods      map[string]*agentPod
	noMatch        string
	hourlyLimit    int
	needsSchedule  bool
	rejectedHooks  []string
	stepSerial     int
	pipelineSerial map[string]int
}

// New builds a Server from opts and starts its scheduler. Call Close when done.
func New(opts Options) *Server {
	opts = withDefaults(opts)
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		now:      opts.Now,
		stop:     make(chan struct{}),
		wake:     make(chan struct{}, 1),
		loopDone: make(chan struct{}),
		tokens:   map[string]*issuedToken{},
	}
	s.faults = newFaultInjector(opts.Faults)
	s.hooks = newWebhookSender(s.log)
	s.resetLocked()
	for _, t := range opts.Webhooks {
		s.AddWebhook(t)
	}
	s.mux = s.routes()
	go s.schedulerLoop()
	return s
}

func withDefaults(opts Options) Options {
	if len(opts.Workspaces) == 0 {
		opts.Workspaces = []Workspace{{
			UUID: DefaultWorkspaceUUID, Slug: DefaultWorkspaceSlug,
			Repositories: []Repository{{UUID: DefaultRepositoryUUID, Slug: DefaultRepositorySlug}},
		}}
	}
	if opts.OAuthConsumers == nil {
		opts.OAuthConsumers = map[string]string{DefaultClientID: DefaultClientSecret}
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = defaultTokenTTL
	}
	if opts.HourlyLimit == 0 {
		opts.HourlyLimit = defaultHourlyLimit
	}
	if opts.RunnerLimit <= 0 {
		opts.RunnerLimit = defaultRunnerLimit
	}
	if opts.NoMatch == "" {
		opts.NoMatch = noMatchWait
	}
	if opts.ConnectDelay == 0 {
		opts.ConnectDelay = defaultConnect
	}
	if opts.ConnectDelay < 0 {
		opts.ConnectDelay = 0
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	return opts
}

// Close stops the scheduler and webhook delivery. In-flight HTTP requests are
// the caller's listener's business.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.stop)
		<-s.loopDone
		s.hooks.close()
	})
}

// ServeHTTP serves the Bitbucket paths and the /_sim/ admin API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Faults stand for Bitbucket's API in trouble as the operator sees it; the
	// admin API and the agents' paths do not get them.
	if !strings.HasPrefix(r.URL.Path, adminPrefix) && !strings.HasPrefix(r.URL.Path, agentPrefix) && r.URL.Path != runnerTokenPath {
		if s.faults.inject(w, r, s.retryAfterForStorm()) {
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /site/oauth2/access_token", s.handleAccessToken)

	for _, scope := range []string{
		"/internal/workspaces/{ws}/pipelines-config/runners",
		"/internal/repositories/{ws}/{repo}/pipelines-config/runners",
	} {
		mux.Handle("GET "+scope, s.api(s.handleListRunners))
		mux.Handle("GET "+scope+"/{$}", s.api(s.handleListRunners))
		mux.Handle("POST "+scope, s.api(s.handleCreateRunner))
		mux.Handle("POST "+scope+"/{$}", s.api(s.handleCreateRunner))
		mux.Handle("GET "+scope+"/{runner}", s.api(s.handleGetRunner))
		mux.Handle("DELETE "+scope+"/{runner}", s.api(s.handleDeleteRunner))
		mux.Handle("PUT "+scope+"/{runner}/state", s.api(s.handleRunnerState))
	}

	mux.Handle("GET /2.0/workspaces/{ws}", s.api(s.handleGetWorkspace))
	mux.Handle("GET /2.0/repositories/{ws}", s.api(s.handleListRepositories))
	mux.Handle("GET /2.0/repositories/{ws}/{$}", s.api(s.handleListRepositories))
	mux.Handle("GET /2.0/repositories/{ws}/{repo}", s.api(s.handleGetRepository))
	mux.Handle("GET /2.0/repositories/{ws}/{repo}/pipelines", s.api(s.handleListPipelines))
	mux.Handle("GET /2.0/repositories/{ws}/{repo}/pipelines/{$}", s.api(s.handleListPipelines))
	mux.Handle("GET /2.0/repositories/{ws}/{repo}/pipelines/{pipeline}", s.api(s.handleGetPipeline))
	mux.Handle("GET /2.0/repositories/{ws}/{repo}/pipelines/{pipeline}/steps", s.api(s.handleListSteps))
	mux.Handle("GET /2.0/repositories/{ws}/{repo}/pipelines/{pipeline}/steps/{$}", s.api(s.handleListSteps))
	mux.Handle("GET /2.0/repositories/{ws}/{repo}/pipelines/{pipeline}/steps/{step}", s.api(s.handleGetStep))
	mux.Handle("GET /2.0/repositories/{ws}/{repo}/src/{commit}/{path...}", s.api(s.handleSource))

	s.agentRoutes(mux)
	s.adminRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "Resource not found")
	})
	return mux
}

// errorBody is Bitbucket's error envelope: {"type":"error","error":{...}}.
type errorBody struct {
	Type  string      `json:"type"`
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string `json:"message"`
	Detail  string `json:"detail,omitempty"`
}

func writeError(w http.ResponseWriter, status int, message string) {
	writeErrorDetail(w, status, message, "")
}

func writeErrorDetail(w http.ResponseWriter, status int, message, detail string) {
	writeJSON(w, status, errorBody{Type: "error", Error: errorDetail{Message: message, Detail: detail}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// bitbucketTime formats like Bitbucket: UTC, microseconds, trailing Z.
func bitbucketTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000Z")
}

// kick asks the scheduler for an early pass; it never blocks.
func (s *Server) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
