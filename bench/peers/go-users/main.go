// go-users-server — the Go peer of examples/user-service for GetUser,
// written the way a grpc-go team usually writes such a service: grpc-go with
// go-grpc-prometheus interceptors and /metrics, an in-process map as L1,
// Redis through redigo's pool, PostgreSQL through pgx v4's pool with a
// prepared statement, and golang.org/x/sync/singleflight so concurrent
// misses of one id make one query.
//
// Room: bench/peers — a benchmark peer (bench/run-users), not part of
// libperfc. Built offline in GOPATH mode from Debian's golang-* packages
// (GO111MODULE=off); the messages and service come from
// examples/user-service/proto/user/v1/user.proto (its HTTP and perfc options
// stripped: they add no message, field or method) through protoc-gen-go at
// build time. Same table (the service's own migration), same SELECT, same
// key and TTLs as the service's (perfc.cache) option on GetUser.
//
// GetUser, as the perfc service serves it:
//  1. id <= 0: NOT_FOUND without a query (ids are identity values from 1);
//  2. L1 (a map bounded to --l1-max-entries; entries live min(TTL,
//     --l1-ttl), 10 s like perfc's cache.l1_ttl default): a hit answers;
//  3. Redis GET "user:{id}": the marshalled User ("" caches NOT_FOUND for
//     --negative-ttl); a hit fills L1; a Redis error falls through to the
//     database, as a cache must not turn a Redis outage into failures;
//  4. on a miss, one load per id at a time (singleflight): the prepared
//     SELECT through the pool, then SET with the TTL (+ jitter) and L1.
// --l1-max-entries 0 turns L1 off (every call reads Redis); --cache=false
// turns the cache off (every call is a SELECT, no Redis at all), so
// bench/run-users compares every path. Only GetUser is implemented; the
// other methods answer UNIMPLEMENTED (the benchmark calls GetUser only).
//
// Counters for the benchmark's checks (where the answers came from):
// gousers_cache_l1_hits_total, gousers_cache_redis_hits_total,
// gousers_cache_loads_total, gousers_cache_singleflight_shared_total,
// gousers_pg_queries_total, gousers_redis_errors_total.
//
// --gateway-listen adds grpc-gateway (v1.6.4, Debian's sources; user.pb.gw.go
// generated at build time by protoc-gen-grpc-gateway from the same
// user.proto with its google.api.http rules kept) in front of the service,
// deployed the way grpc-gateway's README and most grpc-go teams do it: in
// the same process, a runtime.ServeMux registered with
// RegisterUserServiceHandlerFromEndpoint, which dials this process's own gRPC
// listener over loopback (one grpc.ClientConn, one HTTP/2 connection), and
// served by net/http on a second port. The handler is wrapped in
// golang.org/x/net/http2/h2c so the same port takes HTTP/1.1 and cleartext
// HTTP/2 (prior knowledge), as perfc's listener does; net/http alone speaks
// HTTP/2 only over TLS. Routes: the google.api.http rules of user.proto
// (GET /v1/users/{id} is the one the benchmark calls; the others reach
// methods this peer leaves UNIMPLEMENTED, answered 501).
//
// Usage: go-users-server --listen HOST:PORT --postgres DSN [--redis HOST:PORT]
//
//	[--gateway-listen HOST:PORT] [--metrics-listen HOST:PORT] [--threads N] [--pg-pool N] [--redis-pool N]
//	[--l1-max-entries N] [--l1-ttl D] [--cache=false] [--ttl D] [--negative-ttl D]
//	[--jitter-percent P] [--key-prefix S]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/golang/protobuf/proto"
	"github.com/golang/protobuf/ptypes/timestamp"
	"github.com/gomodule/redigo/redis"
	grpc_prometheus "github.com/grpc-ecosystem/go-grpc-prometheus"
	gwruntime "github.com/grpc-ecosystem/grpc-gateway/runtime"
	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	userpb "perfcbench/userpb"
)

// Same stream limit as perfc (server.max_concurrent_streams) and the echo
// peers; grpc-go's default is unlimited.
const maxConcurrentStreams = 1024

// The service's own statement (examples/user-service/src/user_store.c):
// timestamps as microseconds since the epoch.
const getUserSQL = "SELECT id, name, email, " +
	"(extract(epoch FROM create_time) * 1000000)::int8, " +
	"(extract(epoch FROM update_time) * 1000000)::int8 FROM users WHERE id = $1"

// The load outlives any one caller (others may share it), so it has its own
// bound: the service's postgres.statement_timeout.
const loadTimeout = 5 * time.Second

var (
	l1Hits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gousers_cache_l1_hits_total", Help: "GetUser answered from the in-process map."})
	redisHits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gousers_cache_redis_hits_total", Help: "GetUser answered from Redis."})
	loads = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gousers_cache_loads_total", Help: "Cache misses loaded from PostgreSQL."})
	shared = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gousers_cache_singleflight_shared_total", Help: "Misses whose load was shared by several calls (each of them, the one that ran it included, as singleflight reports it)."})
	pgQueries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gousers_pg_queries_total", Help: "SELECTs run."})
	redisErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gousers_redis_errors_total", Help: "Redis commands that failed (the read fell through)."})
)

// l1Entry is one cached answer: a user (shared read-only by every caller)
// or "not found".
type l1Entry struct {
	user    *userpb.User
	expires int64 // unix nanoseconds
}

// l1Cache is the in-process level: a map under a RWMutex, at most max
// entries; when full, an arbitrary entry makes room (Go's map order).
type l1Cache struct {
	mu  sync.RWMutex
	m   map[int64]l1Entry
	max int
}

func (c *l1Cache) get(id int64, now int64) (l1Entry, bool) {
	c.mu.RLock()
	e, ok := c.m[id]
	c.mu.RUnlock()
	if !ok || now >= e.expires {
		return l1Entry{}, false
	}
	return e, true
}

func (c *l1Cache) put(id int64, e l1Entry) {
	c.mu.Lock()
	if _, ok := c.m[id]; !ok && len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[id] = e
	c.mu.Unlock()
}

type userServer struct {
	userpb.UnimplementedUserServiceServer
	db        *pgxpool.Pool
	redis     *redis.Pool // nil: cache off
	l1        *l1Cache    // nil: no L1
	flight    singleflight.Group
	ttl       time.Duration
	negTTL    time.Duration
	l1TTLMax  time.Duration
	jitter    int // percent of the TTL added at random
	keyPrefix string
}

var errNotFound = status.Error(codes.NotFound, "user not found")

func usTimestamp(us int64) *timestamp.Timestamp {
	// Floor division, so instants before 1970 keep a non-negative nanos.
	s, rem := us/1000000, us%1000000
	if rem < 0 {
		s--
		rem += 1000000
	}
	return &timestamp.Timestamp{Seconds: s, Nanos: int32(rem * 1000)}
}

// query runs the prepared SELECT; (nil, nil) when no row has the id.
func (s *userServer) query(ctx context.Context, id int64) (*userpb.User, error) {
	pgQueries.Inc()
	var u userpb.User
	var c, up int64
	err := s.db.QueryRow(ctx, "user_get", id).Scan(&u.Id, &u.Name, &u.Email, &c, &up)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	u.CreateTime, u.UpdateTime = usTimestamp(c), usTimestamp(up)
	return &u, nil
}

func dbError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Errorf(codes.Unavailable, "postgres: %v", err)
}

func (s *userServer) ttlWithJitter(base time.Duration) time.Duration {
	if s.jitter <= 0 {
		return base
	}
	return base + time.Duration(rand.Int63n(int64(base)*int64(s.jitter)/100+1))
}

func (s *userServer) GetUser(ctx context.Context, req *userpb.GetUserRequest) (*userpb.User, error) {
	id := req.GetId()
	if id <= 0 {
		return nil, errNotFound
	}
	if s.redis == nil { // cache off: every call is a SELECT
		u, err := s.query(ctx, id)
		if err != nil {
			return nil, dbError(ctx, err)
		}
		if u == nil {
			return nil, errNotFound
		}
		return u, nil
	}
	now := time.Now().UnixNano()
	if s.l1 != nil {
		if e, ok := s.l1.get(id, now); ok {
			l1Hits.Inc()
			return answer(e.user)
		}
	}
	key := s.keyPrefix + strconv.FormatInt(id, 10)
	if u, ok := s.redisGet(ctx, key); ok {
		redisHits.Inc()
		if s.l1 != nil {
			s.l1.put(id, l1Entry{user: u, expires: now + int64(s.l1TTL(u))})
		}
		return answer(u)
	}
	v, err, wasShared := s.flight.Do(key, func() (interface{}, error) {
		return s.load(id, key)
	})
	if wasShared {
		shared.Inc()
	}
	if err != nil {
		return nil, dbError(ctx, err)
	}
	return answer(v.(*userpb.User))
}

func answer(u *userpb.User) (*userpb.User, error) {
	if u == nil {
		return nil, errNotFound
	}
	return u, nil
}

func (s *userServer) l1TTL(u *userpb.User) time.Duration {
	t := s.ttl
	if u == nil {
		t = s.negTTL
	}
	if t > s.l1TTLMax {
		t = s.l1TTLMax
	}
	return t
}

// redisGet: (user or nil for a cached NOT_FOUND, true) on a hit; false on a
// miss or a Redis error (the caller loads from the database).
func (s *userServer) redisGet(ctx context.Context, key string) (*userpb.User, bool) {
	conn, err := s.redis.GetContext(ctx)
	if err != nil {
		redisErrors.Inc()
		return nil, false
	}
	b, err := redis.Bytes(conn.Do("GET", key))
	conn.Close()
	if err != nil {
		if err != redis.ErrNil {
			redisErrors.Inc()
		}
		return nil, false
	}
	if len(b) == 0 {
		return nil, true
	}
	var u userpb.User
	if err := proto.Unmarshal(b, &u); err != nil {
		redisErrors.Inc()
		return nil, false
	}
	return &u, true
}

// load is the singleflight body: the SELECT, then Redis and L1 filled.
func (s *userServer) load(id int64, key string) (interface{}, error) {
	loads.Inc()
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	u, err := s.query(ctx, id)
	if err != nil {
		return nil, err
	}
	var val []byte
	ttl := s.negTTL
	if u != nil {
		if val, err = proto.Marshal(u); err != nil {
			return nil, err
		}
		ttl = s.ttl
	}
	if conn, err := s.redis.GetContext(ctx); err == nil {
		if _, err := conn.Do("SET", key, val, "PX", s.ttlWithJitter(ttl).Milliseconds()); err != nil {
			redisErrors.Inc()
		}
		conn.Close()
	} else {
		redisErrors.Inc()
	}
	if s.l1 != nil {
		s.l1.put(id, l1Entry{user: u, expires: time.Now().UnixNano() + int64(s.l1TTL(u))})
	}
	return u, nil
}

func main() {
	listen := flag.String("listen", "", "gRPC address HOST:PORT")
	metricsListen := flag.String("metrics-listen", "", "/metrics address HOST:PORT")
	gatewayListen := flag.String("gateway-listen", "", "grpc-gateway (HTTP/JSON) address HOST:PORT")
	threads := flag.Int("threads", 0, "GOMAXPROCS (0 = Go default)")
	dsn := flag.String("postgres", "", "PostgreSQL DSN (libpq keyword/value or URL)")
	redisAddr := flag.String("redis", "", "Redis HOST:PORT (needed unless --cache=false)")
	pgPool := flag.Int("pg-pool", 10, "PostgreSQL connections (postgres.pool_size)")
	redisPool := flag.Int("redis-pool", 8, "Redis connections (redis.pool_size)")
	l1Max := flag.Int("l1-max-entries", 65536, "L1 entries; 0 = no L1 (every read goes to Redis)")
	cache := flag.Bool("cache", true, "false: no cache, every GetUser is a SELECT")
	ttl := flag.Duration("ttl", 10*time.Minute, "cached user TTL (the option's ttl)")
	negTTL := flag.Duration("negative-ttl", 30*time.Second, "cached NOT_FOUND TTL")
	l1TTL := flag.Duration("l1-ttl", 10*time.Second, "longest life of an L1 entry")
	jitter := flag.Int("jitter-percent", 10, "random TTL extension, percent")
	keyPrefix := flag.String("key-prefix", "user:", "Redis key prefix")
	flag.Parse()
	if *listen == "" || *dsn == "" || (*cache && *redisAddr == "") || flag.NArg() != 0 ||
		*pgPool < 1 || *redisPool < 1 || *l1Max < 0 || *jitter < 0 || *ttl <= 0 || *negTTL <= 0 || *l1TTL <= 0 {
		fmt.Fprintln(os.Stderr, "usage: go-users-server --listen HOST:PORT --postgres DSN [--redis HOST:PORT] "+
			"[--gateway-listen HOST:PORT] [--metrics-listen HOST:PORT] [--threads N] [--pg-pool N] [--redis-pool N] "+
			"[--l1-max-entries N] [--l1-ttl D] [--cache=false] [--ttl D] [--negative-ttl D] [--jitter-percent P] [--key-prefix S]")
		os.Exit(2)
	}
	if *threads > 0 {
		runtime.GOMAXPROCS(*threads)
	}
	log.SetPrefix("go-users-server: ")

	pcfg, err := pgxpool.ParseConfig(*dsn)
	if err != nil {
		log.Fatalf("postgres: %v", err)
	}
	pcfg.MaxConns = int32(*pgPool)
	pcfg.MinConns = int32(*pgPool)
	pcfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Prepare(ctx, "user_get", getUserSQL)
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	db, err := pgxpool.ConnectConfig(ctx, pcfg)
	if err == nil {
		err = db.Ping(ctx)
	}
	cancel()
	if err != nil {
		log.Fatalf("postgres: %v", err)
	}
	defer db.Close()

	srvImpl := &userServer{db: db, ttl: *ttl, negTTL: *negTTL, l1TTLMax: *l1TTL, jitter: *jitter, keyPrefix: *keyPrefix}
	if *cache {
		addr := *redisAddr
		srvImpl.redis = &redis.Pool{
			MaxIdle:     *redisPool,
			MaxActive:   *redisPool,
			Wait:        true,
			IdleTimeout: 5 * time.Minute,
			Dial: func() (redis.Conn, error) {
				return redis.Dial("tcp", addr,
					redis.DialConnectTimeout(time.Second),
					redis.DialReadTimeout(200*time.Millisecond),
					redis.DialWriteTimeout(200*time.Millisecond))
			},
		}
		defer srvImpl.redis.Close()
		c := srvImpl.redis.Get()
		_, err := c.Do("PING")
		c.Close()
		if err != nil {
			log.Fatalf("redis %s: %v", addr, err)
		}
		if *l1Max > 0 {
			srvImpl.l1 = &l1Cache{m: make(map[int64]l1Entry), max: *l1Max}
		}
	}

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("cannot listen on %s: %v", *listen, err)
	}
	opts := []grpc.ServerOption{grpc.MaxConcurrentStreams(maxConcurrentStreams)}
	var hsrv *http.Server
	var mlis net.Listener
	if *metricsListen != "" {
		if mlis, err = net.Listen("tcp", *metricsListen); err != nil {
			log.Fatalf("cannot listen on %s: %v", *metricsListen, err)
		}
		grpc_prometheus.EnableHandlingTimeHistogram()
		prometheus.MustRegister(l1Hits, redisHits, loads, shared, pgQueries, redisErrors)
		opts = append(opts,
			grpc.UnaryInterceptor(grpc_prometheus.UnaryServerInterceptor),
			grpc.StreamInterceptor(grpc_prometheus.StreamServerInterceptor))
	}
	srv := grpc.NewServer(opts...)
	userpb.RegisterUserServiceServer(srv, srvImpl)
	if mlis != nil {
		grpc_prometheus.Register(srv)
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.Handler())
		hsrv = &http.Server{Handler: mux}
		go hsrv.Serve(mlis)
	}

	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	var gsrv *http.Server
	var glis net.Listener
	gctx, gcancel := context.WithCancel(context.Background())
	defer gcancel()
	if *gatewayListen != "" {
		if glis, err = net.Listen("tcp", *gatewayListen); err != nil {
			log.Fatalf("cannot listen on %s: %v", *gatewayListen, err)
		}
		gwmux := gwruntime.NewServeMux()
		// Dials lazily; the connection is this process's own listener.
		err := userpb.RegisterUserServiceHandlerFromEndpoint(gctx, gwmux, lis.Addr().String(),
			[]grpc.DialOption{grpc.WithInsecure()})
		if err != nil {
			log.Fatalf("gateway: %v", err)
		}
		gsrv = &http.Server{Handler: h2c.NewHandler(gwmux,
			&http2.Server{MaxConcurrentStreams: maxConcurrentStreams})}
		go gsrv.Serve(glis)
	}
	mode := "cache off"
	if srvImpl.redis != nil && srvImpl.l1 != nil {
		mode = fmt.Sprintf("L1 %d entries + redis", *l1Max)
	} else if srvImpl.redis != nil {
		mode = "no L1, redis"
	}
	// The metrics and gateway lines first: a script that waits for "listening on" then
	// has every port.
	if mlis != nil {
		fmt.Printf("metrics on %s\n", mlis.Addr())
	}
	if glis != nil {
		fmt.Printf("gateway on %s\n", glis.Addr())
	}
	fmt.Printf("listening on %s\n", lis.Addr())
	fmt.Printf("GetUser: %s, postgres pool %d\n", mode, *pgPool)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sigs:
		log.Printf("%v, shutting down", s)
	case err := <-done:
		log.Fatalf("serve: %v", err)
	}
	// The gateway first (its calls are this server's clients), then gRPC
	// with a 5 s grace, then a hard stop.
	if gsrv != nil {
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		gsrv.Shutdown(sctx)
		scancel()
		gcancel() // closes the gateway's client connection
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		srv.Stop()
	}
	if hsrv != nil {
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		defer scancel()
		hsrv.Shutdown(sctx)
	}
}
