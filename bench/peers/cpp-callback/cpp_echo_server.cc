// cpp-echo-server — the gRPC C++ callback-API echo server, the peer perfc is
// compared with. It is what a C++ user of Debian's libgrpc++ 1.51 would write:
// Echo::CallbackService, the default ServerUnaryReactor, protobuf messages
// generated at build time.
//
// Room: bench/peers — a benchmark peer, not part of libperfc. The only
// C++ in the tree; it is built only with -DPERFC_BUILD_PEERS=ON.
//
// Built twice from this file: cpp-echo-server serves Echo only;
// cpp-echo-server-full (CPP_ECHO_FULL defined) also serves grpc.health.v1
// (grpc::EnableDefaultHealthCheckService) and grpc.reflection.v1alpha
// (libgrpc++_reflection), as perfc-echo-server does, so the two register
// the same methods (bench/run-idle's like-for-like comparison).
//
// Usage: cpp-echo-server --listen HOST:PORT [--threads N]
//   --threads is accepted for a uniform command line with the other servers
//   but the callback API sizes its own pollers (in 1.51, without a background
//   poller, a shared "callback alternative" queue nexted by
//   clamp(cores / 2, 2, 16) threads); so it is reported and ignored.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include <pthread.h>

#include <grpcpp/grpcpp.h>
#ifdef CPP_ECHO_FULL
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#endif

#include "echo.grpc.pb.h"

namespace {

// Same stream limit as perfc (PERFC_DEFAULT_MAX_CONCURRENT_STREAMS) and the
// C-core peer, so no server wins on a setting h2load never reaches anyway.
constexpr int kMaxConcurrentStreams = 1024;

// Bidi echo as the callback API intends it: one read outstanding at a time,
// each message written back before the next read starts, Finish on the
// client's half-close. No thread is held while a stream waits.
class StreamEcho final
    : public grpc::ServerBidiReactor<bench::v1::EchoRequest,
                                     bench::v1::EchoResponse> {
public:
  StreamEcho() { StartRead(&req_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    resp_.set_payload(req_.payload());
    StartWrite(&resp_);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      return;
    }
    StartRead(&req_);
  }
  void OnDone() override { delete this; }

private:
  bench::v1::EchoRequest req_;
  bench::v1::EchoResponse resp_;
};

class EchoService final : public bench::v1::Echo::CallbackService {
  grpc::ServerBidiReactor<bench::v1::EchoRequest, bench::v1::EchoResponse> *
  Stream(grpc::CallbackServerContext *) override {
    return new StreamEcho();
  }

  grpc::ServerUnaryReactor *Unary(grpc::CallbackServerContext *ctx,
                                  const bench::v1::EchoRequest *req,
                                  bench::v1::EchoResponse *resp) override {
    resp->set_payload(req->payload());
    grpc::ServerUnaryReactor *reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

void Usage(FILE *f) {
  std::fprintf(f, "usage: cpp-echo-server --listen HOST:PORT [--threads N]\n");
}

} // namespace

int main(int argc, char **argv) {
  std::string listen;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!std::strcmp(a, "-h") || !std::strcmp(a, "--help")) {
      Usage(stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      Usage(stderr);
      return 2;
    }
    const char *v = argv[++i];
    if (!std::strcmp(a, "--listen")) {
      listen = v;
    } else if (!std::strcmp(a, "--threads")) {
      std::fprintf(stderr,
                   "cpp-echo-server: --threads %s ignored: the callback API "
                   "sizes its own pollers\n",
                   v);
    } else {
      std::fprintf(stderr, "cpp-echo-server: unknown option '%s'\n", a);
      Usage(stderr);
      return 2;
    }
  }
  if (listen.empty()) {
    Usage(stderr);
    return 2;
  }

  // Block the stop signals before gRPC starts threads, so they all inherit
  // the mask and main alone takes the signal with sigwait. A shell starts
  // background jobs with SIGINT ignored, and an ignored signal is discarded
  // even while blocked, so the dispositions are reset first.
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

#ifdef CPP_ECHO_FULL
  // Both must be called before the builder is made: they set process-wide
  // switches the builder reads when it is constructed / built.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
#endif
  EchoService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             kMaxConcurrentStreams);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port <= 0) {
    std::fprintf(stderr, "cpp-echo-server: cannot listen on %s\n",
                 listen.c_str());
    return 1;
  }
  std::string host = listen.substr(0, listen.rfind(':'));
  std::printf("listening on %s:%d\n", host.c_str(), port);
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop, &sig);
  std::fprintf(stderr, "cpp-echo-server: signal %d, shutting down\n", sig);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
  return 0;
}
