// go-echo-server — the grpc-go echo peer, instrumented the way a go-zero or
// plain grpc-go production service usually is: go-grpc-prometheus server
// interceptors with the handling-time histogram on, and /metrics over HTTP.
// perfc exports the same metric names, so this is the like-for-like peer for
// perfc with metrics enabled.
//
// Room: bench/peers — a benchmark peer, not part of libperfc. Built offline
// in GOPATH mode from Debian's golang-* packages (GO111MODULE=off); the echo
// messages come from protoc-gen-go (golang-goprotobuf-dev) at build time.
//
// Usage: go-echo-server --listen HOST:PORT [--metrics-listen HOST:PORT] [--threads N]
// where N sets GOMAXPROCS (0 = Go's default). Without --metrics-listen it is
// plain grpc-go: no interceptors and no /metrics (bench/run's "go-plain",
// the peer for perfc without metrics); it prints "metrics off" then.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	grpc_prometheus "github.com/grpc-ecosystem/go-grpc-prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	echopb "perfcbench/echopb"
)

// Same stream limit as perfc (PERFC_DEFAULT_MAX_CONCURRENT_STREAMS) and the
// C peers; grpc-go's default is unlimited.
const maxConcurrentStreams = 1024

type echoServer struct{}

func (echoServer) Unary(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoResponse, error) {
	return &echopb.EchoResponse{Payload: req.Payload}, nil
}

// Stream echoes every request message as one response, in order, until the
// client half-closes.
func (echoServer) Stream(st echopb.Echo_StreamServer) error {
	for {
		req, err := st.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := st.Send(&echopb.EchoResponse{Payload: req.Payload}); err != nil {
			return err
		}
	}
}

func main() {
	listen := flag.String("listen", "", "gRPC address HOST:PORT")
	metricsListen := flag.String("metrics-listen", "", "/metrics address HOST:PORT")
	threads := flag.Int("threads", 0, "GOMAXPROCS (0 = Go default)")
	flag.Parse()
	if *listen == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: go-echo-server --listen HOST:PORT [--metrics-listen HOST:PORT] [--threads N]")
		os.Exit(2)
	}
	if *threads > 0 {
		runtime.GOMAXPROCS(*threads)
	}

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-echo-server: cannot listen on %s: %v\n", *listen, err)
		os.Exit(1)
	}
	opts := []grpc.ServerOption{grpc.MaxConcurrentStreams(maxConcurrentStreams)}
	var hsrv *http.Server
	var mlis net.Listener
	if *metricsListen != "" {
		mlis, err = net.Listen("tcp", *metricsListen)
		if err != nil {
			fmt.Fprintf(os.Stderr, "go-echo-server: cannot listen on %s: %v\n", *metricsListen, err)
			os.Exit(1)
		}
		grpc_prometheus.EnableHandlingTimeHistogram()
		opts = append(opts,
			grpc.UnaryInterceptor(grpc_prometheus.UnaryServerInterceptor),
			grpc.StreamInterceptor(grpc_prometheus.StreamServerInterceptor))
	}
	srv := grpc.NewServer(opts...)
	echopb.RegisterEchoServer(srv, echoServer{})
	if mlis != nil {
		grpc_prometheus.Register(srv)
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.Handler())
		hsrv = &http.Server{Handler: mux}
		go hsrv.Serve(mlis)
	}

	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	fmt.Printf("listening on %s\n", lis.Addr())
	if mlis != nil {
		fmt.Printf("metrics on %s\n", mlis.Addr())
	} else {
		fmt.Println("metrics off")
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sigs:
		fmt.Fprintf(os.Stderr, "go-echo-server: %v, shutting down\n", s)
	case err := <-done:
		fmt.Fprintf(os.Stderr, "go-echo-server: serve: %v\n", err)
		os.Exit(1)
	}
	// Graceful stop with the same 5 s grace perfc uses, then hard stop.
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		srv.Stop()
	}
	if hsrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		hsrv.Shutdown(ctx)
	}
}
