// interop_client.cc — grpc's interop test cases
// (doc/interop-test-descriptions.md) on Debian's libgrpc++ 1.51: a third
// client, independent of perfc's own (src/interop_client.c, on perfc's C
// client) and of python3-grpcio (tests/interop/test_interop_cases.py).
//
//   interop-client-cpp --server_host H --server_port P --test_case NAME|all
//                      [--use_tls true|false] [--use_test_ca true|false]
//                      [--server_host_override NAME] [--tls_dir DIR]
//
// Flags as grpc's own interop client takes them, `--flag value` or
// `--flag=value`. Prints "interop-client-cpp: NAME: PASS" per passing case;
// a failure prints "interop-client-cpp: NAME: FAIL: <what differed>" on
// stderr. Exit status 0 when every case run passed, 1 otherwise, 2 for bad
// flags.
//
// Unlike perfc's C client this one also checks that responses arrived
// compressed (or not) as asked, the way grpc's C++ interop client does:
// the core's per-message flags of the last received message, read through
// ClientContext::c_call() and grpc_call_test_only_get_message_flags(), a
// function libgrpc 29 exports with C++ linkage.
//
// Room: examples/interop-server (built only with -DPERFC_BUILD_PEERS=ON,
// like the other C++ in the tree; see CMakeLists.txt next to this file).
#include "grpc/testing/test.grpc.pb.h"

#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

// The core's test hook for the flags of the last message a call received
// (src/core/lib/surface/call.h in grpc 1.51; exported by libgrpc.so.29).
uint32_t grpc_call_test_only_get_message_flags(grpc_call *call);

namespace {

using grpc::ClientContext;
using grpc::Status;
using grpc::StatusCode;
using namespace grpc::testing;

// The core's internal flags for "this message was compressed" (call.h).
constexpr uint32_t kWriteInternalCompress = 0x80000000u;
constexpr uint32_t kWriteInternalWasCompressed = 0x40000000u;

// Sizes from the interop descriptions.
const std::vector<int> kInSizes = {27182, 8, 1828, 45904};
const std::vector<int> kOutSizes = {31415, 9, 2653, 58979};
constexpr int kLargeReq = 271828;
constexpr int kLargeResp = 314159;
// Every case finishes in well under a second against a healthy server; the
// deadline only bounds a hang.
constexpr int kDeadlineS = 20;

const char *kEchoInitialKey = "x-grpc-test-echo-initial";
const char *kEchoInitialValue = "test_initial_metadata_value";
const char *kEchoTrailingKey = "x-grpc-test-echo-trailing-bin";
const std::string kEchoTrailingValue("\xab\xab\xab", 3);

// A failed expectation: the case stops and reports it.
struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename... A> [[noreturn]] void fail(A &&...parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw Failure(os.str());
}

const char *code_name(StatusCode c) {
  static const char *names[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
                                "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                                "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                                "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                                "UNAUTHENTICATED"};
  int i = static_cast<int>(c);
  return i >= 0 && i <= 16 ? names[i] : "?";
}

void expect_status(const char *what, const Status &s, StatusCode want,
                   const std::string *want_msg = nullptr) {
  if (s.error_code() != want)
    fail(what, ": status ", code_name(s.error_code()), " (\"", s.error_message(),
         "\"), expected ", code_name(want));
  if (want_msg && s.error_message() != *want_msg)
    fail(what, ": status message \"", s.error_message(), "\", expected \"", *want_msg, "\"");
}

void expect_ok(const char *what, const Status &s) { expect_status(what, s, StatusCode::OK); }

// A body of n zero bytes, as the descriptions' COMPRESSABLE payloads are.
void expect_payload(const char *what, const Payload &p, int n) {
  if (p.type() != COMPRESSABLE)
    fail(what, ": payload type ", p.type(), ", expected COMPRESSABLE");
  if (p.body().size() != static_cast<size_t>(n))
    fail(what, ": payload of ", p.body().size(), " bytes, expected ", n);
  if (p.body().find_first_not_of('\0') != std::string::npos)
    fail(what, ": payload is not all zeros");
}

void set_deadline(ClientContext &ctx) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(kDeadlineS));
}

// Whether the last message ctx's call received arrived compressed.
bool last_was_compressed(ClientContext &ctx) {
  uint32_t f = grpc_call_test_only_get_message_flags(ctx.c_call());
  return (f & (kWriteInternalCompress | kWriteInternalWasCompressed)) != 0;
}

void expect_compressed(const char *what, ClientContext &ctx, bool want) {
  if (last_was_compressed(ctx) != want)
    fail(what, ": response arrived ", want ? "uncompressed" : "compressed", ", expected ",
         want ? "compressed" : "uncompressed");
}

std::string meta_value(const std::multimap<grpc::string_ref, grpc::string_ref> &md,
                       const char *key, bool *found) {
  auto it = md.find(key);
  *found = it != md.end();
  return *found ? std::string(it->second.data(), it->second.size()) : std::string();
}

void expect_echoed(const char *what, ClientContext &ctx) {
  bool found;
  std::string v = meta_value(ctx.GetServerInitialMetadata(), kEchoInitialKey, &found);
  if (!found || v != kEchoInitialValue)
    fail(what, ": initial metadata ", kEchoInitialKey, found ? " has the wrong value" : " missing");
  v = meta_value(ctx.GetServerTrailingMetadata(), kEchoTrailingKey, &found);
  if (!found || v != kEchoTrailingValue)
    fail(what, ": trailing metadata ", kEchoTrailingKey, found ? " has the wrong value" : " missing");
}

SimpleRequest large_request() {
  SimpleRequest req;
  req.set_response_type(COMPRESSABLE);
  req.set_response_size(kLargeResp);
  req.mutable_payload()->set_body(std::string(kLargeReq, '\0'));
  return req;
}

StreamingOutputCallRequest out_request(std::vector<int> sizes, int in_size) {
  StreamingOutputCallRequest req;
  req.set_response_type(COMPRESSABLE);
  for (int s : sizes)
    req.add_response_parameters()->set_size(s);
  if (in_size >= 0)
    req.mutable_payload()->set_body(std::string(in_size, '\0'));
  return req;
}

class Cases {
public:
  explicit Cases(std::shared_ptr<grpc::Channel> ch)
      : stub_(TestService::NewStub(ch)), unimpl_(UnimplementedService::NewStub(ch)) {}

  void empty_unary() {
    ClientContext ctx;
    set_deadline(ctx);
    Empty req, resp;
    expect_ok("EmptyCall", stub_->EmptyCall(&ctx, req, &resp));
    if (resp.ByteSizeLong() != 0)
      fail("EmptyCall: response is not empty");
  }

  void large_unary() {
    ClientContext ctx;
    set_deadline(ctx);
    SimpleResponse resp;
    expect_ok("UnaryCall", stub_->UnaryCall(&ctx, large_request(), &resp));
    expect_payload("UnaryCall", resp.payload(), kLargeResp);
  }

  void client_compressed_unary() {
    {
      // The probe: a request claiming to be compressed, sent plain, must be
      // refused, or the server cannot tell and the rest proves nothing.
      ClientContext ctx;
      set_deadline(ctx);
      SimpleRequest req = large_request();
      req.mutable_expect_compressed()->set_value(true);
      SimpleResponse resp;
      expect_status("UnaryCall (probe)", stub_->UnaryCall(&ctx, req, &resp),
                    StatusCode::INVALID_ARGUMENT);
    }
    for (bool compressed : {true, false}) {
      ClientContext ctx;
      set_deadline(ctx);
      if (compressed)
        ctx.set_compression_algorithm(GRPC_COMPRESS_GZIP);
      SimpleRequest req = large_request();
      req.mutable_expect_compressed()->set_value(compressed);
      SimpleResponse resp;
      const char *what = compressed ? "UnaryCall (gzip)" : "UnaryCall (plain)";
      expect_ok(what, stub_->UnaryCall(&ctx, req, &resp));
      expect_payload(what, resp.payload(), kLargeResp);
    }
  }

  void server_compressed_unary() {
    for (bool compressed : {true, false}) {
      ClientContext ctx;
      set_deadline(ctx);
      SimpleRequest req = large_request();
      req.mutable_response_compressed()->set_value(compressed);
      SimpleResponse resp;
      const char *what = compressed ? "UnaryCall (compressed)" : "UnaryCall (uncompressed)";
      expect_ok(what, stub_->UnaryCall(&ctx, req, &resp));
      expect_payload(what, resp.payload(), kLargeResp);
      expect_compressed(what, ctx, compressed);
    }
  }

  void client_streaming() {
    ClientContext ctx;
    set_deadline(ctx);
    StreamingInputCallResponse resp;
    auto w = stub_->StreamingInputCall(&ctx, &resp);
    for (int n : kInSizes) {
      StreamingInputCallRequest req;
      req.mutable_payload()->set_body(std::string(n, '\0'));
      if (!w->Write(req))
        break; // Finish() says why
    }
    w->WritesDone();
    expect_ok("StreamingInputCall", w->Finish());
    if (resp.aggregated_payload_size() != 74922)
      fail("StreamingInputCall: aggregated_payload_size ", resp.aggregated_payload_size(),
           ", expected 74922");
  }

  void client_compressed_streaming() {
    {
      ClientContext ctx;
      set_deadline(ctx);
      StreamingInputCallResponse resp;
      auto w = stub_->StreamingInputCall(&ctx, &resp);
      StreamingInputCallRequest req;
      req.mutable_expect_compressed()->set_value(true);
      req.mutable_payload()->set_body(std::string(27182, '\0'));
      w->Write(req);
      w->WritesDone();
      expect_status("StreamingInputCall (probe)", w->Finish(), StatusCode::INVALID_ARGUMENT);
    }
    ClientContext ctx;
    set_deadline(ctx);
    ctx.set_compression_algorithm(GRPC_COMPRESS_GZIP);
    StreamingInputCallResponse resp;
    auto w = stub_->StreamingInputCall(&ctx, &resp);
    StreamingInputCallRequest req;
    req.mutable_expect_compressed()->set_value(true);
    req.mutable_payload()->set_body(std::string(27182, '\0'));
    bool ok = w->Write(req);
    // The second message goes out uncompressed on the same gzip call.
    req.mutable_expect_compressed()->set_value(false);
    req.mutable_payload()->set_body(std::string(45904, '\0'));
    if (ok)
      w->Write(req, grpc::WriteOptions().set_no_compression());
    w->WritesDone();
    expect_ok("StreamingInputCall", w->Finish());
    if (resp.aggregated_payload_size() != 73086)
      fail("StreamingInputCall: aggregated_payload_size ", resp.aggregated_payload_size(),
           ", expected 73086");
  }

  void server_streaming() {
    ClientContext ctx;
    set_deadline(ctx);
    auto r = stub_->StreamingOutputCall(&ctx, out_request(kOutSizes, -1));
    StreamingOutputCallResponse resp;
    size_t i = 0;
    while (r->Read(&resp)) {
      if (i >= kOutSizes.size())
        fail("StreamingOutputCall: more than ", kOutSizes.size(), " responses");
      expect_payload("StreamingOutputCall", resp.payload(), kOutSizes[i++]);
    }
    expect_ok("StreamingOutputCall", r->Finish());
    if (i != kOutSizes.size())
      fail("StreamingOutputCall: ", i, " responses, expected ", kOutSizes.size());
  }

  void server_compressed_streaming() {
    ClientContext ctx;
    set_deadline(ctx);
    StreamingOutputCallRequest req = out_request({31415, 92653}, -1);
    req.mutable_response_parameters(0)->mutable_compressed()->set_value(true);
    req.mutable_response_parameters(1)->mutable_compressed()->set_value(false);
    auto r = stub_->StreamingOutputCall(&ctx, req);
    StreamingOutputCallResponse resp;
    const int sizes[] = {31415, 92653};
    for (int i = 0; i < 2; i++) {
      if (!r->Read(&resp)) {
        expect_ok("StreamingOutputCall", r->Finish());
        fail("StreamingOutputCall: ", i, " responses, expected 2");
      }
      const char *what = i == 0 ? "StreamingOutputCall (first, compressed)"
                                : "StreamingOutputCall (second, uncompressed)";
      expect_payload(what, resp.payload(), sizes[i]);
      expect_compressed(what, ctx, i == 0);
    }
    if (r->Read(&resp))
      fail("StreamingOutputCall: more than 2 responses");
    expect_ok("StreamingOutputCall", r->Finish());
  }

  void ping_pong() {
    ClientContext ctx;
    set_deadline(ctx);
    auto s = stub_->FullDuplexCall(&ctx);
    StreamingOutputCallResponse resp;
    for (size_t i = 0; i < kInSizes.size(); i++) {
      if (!s->Write(out_request({kOutSizes[i]}, kInSizes[i])))
        break;
      if (!s->Read(&resp))
        break;
      expect_payload("FullDuplexCall", resp.payload(), kOutSizes[i]);
      if (i + 1 == kInSizes.size()) {
        s->WritesDone();
        if (s->Read(&resp))
          fail("FullDuplexCall: a response after the half-close");
        expect_ok("FullDuplexCall", s->Finish());
        return;
      }
    }
    Status st = s->Finish();
    expect_ok("FullDuplexCall", st);
    fail("FullDuplexCall: the stream ended before 4 exchanges");
  }

  void empty_stream() {
    ClientContext ctx;
    set_deadline(ctx);
    auto s = stub_->FullDuplexCall(&ctx);
    s->WritesDone();
    StreamingOutputCallResponse resp;
    if (s->Read(&resp))
      fail("FullDuplexCall: got a response, expected none");
    expect_ok("FullDuplexCall", s->Finish());
  }

  void cancel_after_begin() {
    ClientContext ctx;
    set_deadline(ctx);
    StreamingInputCallResponse resp;
    auto w = stub_->StreamingInputCall(&ctx, &resp);
    ctx.TryCancel();
    expect_status("StreamingInputCall", w->Finish(), StatusCode::CANCELLED);
  }

  void cancel_after_first_response() {
    ClientContext ctx;
    set_deadline(ctx);
    auto s = stub_->FullDuplexCall(&ctx);
    StreamingOutputCallResponse resp;
    if (!s->Write(out_request({31415}, 27182)) || !s->Read(&resp)) {
      expect_ok("FullDuplexCall", s->Finish());
      fail("FullDuplexCall: no first response");
    }
    expect_payload("FullDuplexCall (first response)", resp.payload(), 31415);
    ctx.TryCancel();
    expect_status("FullDuplexCall", s->Finish(), StatusCode::CANCELLED);
  }

  void timeout_on_sleeping_server() {
    ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1));
    auto s = stub_->FullDuplexCall(&ctx);
    // The write may already fail: the deadline can pass first. No
    // half-close, so only the deadline can end the call.
    StreamingOutputCallRequest req;
    req.mutable_payload()->set_body(std::string(27182, '\0'));
    s->Write(req);
    StreamingOutputCallResponse resp;
    if (s->Read(&resp))
      fail("FullDuplexCall: got a response, expected none");
    expect_status("FullDuplexCall", s->Finish(), StatusCode::DEADLINE_EXCEEDED);
  }

  void custom_metadata() {
    {
      ClientContext ctx;
      set_deadline(ctx);
      ctx.AddMetadata(kEchoInitialKey, kEchoInitialValue);
      ctx.AddMetadata(kEchoTrailingKey, kEchoTrailingValue);
      SimpleResponse resp;
      expect_ok("UnaryCall", stub_->UnaryCall(&ctx, large_request(), &resp));
      expect_payload("UnaryCall", resp.payload(), kLargeResp);
      expect_echoed("UnaryCall", ctx);
    }
    ClientContext ctx;
    set_deadline(ctx);
    ctx.AddMetadata(kEchoInitialKey, kEchoInitialValue);
    ctx.AddMetadata(kEchoTrailingKey, kEchoTrailingValue);
    auto s = stub_->FullDuplexCall(&ctx);
    StreamingOutputCallResponse resp;
    bool got = s->Write(out_request({kLargeResp}, kLargeReq)) && s->Read(&resp);
    s->WritesDone();
    if (got && s->Read(&resp))
      fail("FullDuplexCall: more than one response");
    expect_ok("FullDuplexCall", s->Finish());
    if (!got)
      fail("FullDuplexCall: no response");
    expect_payload("FullDuplexCall", resp.payload(), kLargeResp);
    expect_echoed("FullDuplexCall", ctx);
  }

  void status_code_and_message() { expect_echoed_status("test status message", true); }

  void special_status_message() {
    expect_echoed_status("\t\ntest with whitespace\r\nand Unicode BMP \xe2\x98\xba and non-BMP "
                         "\xf0\x9f\x98\x88\t\n",
                         false);
  }

  void unimplemented_method() {
    ClientContext ctx;
    set_deadline(ctx);
    Empty req, resp;
    expect_status("TestService/UnimplementedCall", stub_->UnimplementedCall(&ctx, req, &resp),
                  StatusCode::UNIMPLEMENTED);
  }

  void unimplemented_service() {
    ClientContext ctx;
    set_deadline(ctx);
    Empty req, resp;
    expect_status("UnimplementedService/UnimplementedCall",
                  unimpl_->UnimplementedCall(&ctx, req, &resp), StatusCode::UNIMPLEMENTED);
  }

private:
  // UnaryCall (and FullDuplexCall when `duplex`) asked to end with UNKNOWN
  // and `msg`: the status must come back with that message, byte for byte.
  void expect_echoed_status(const std::string &msg, bool duplex) {
    {
      ClientContext ctx;
      set_deadline(ctx);
      SimpleRequest req;
      req.mutable_response_status()->set_code(2);
      req.mutable_response_status()->set_message(msg);
      SimpleResponse resp;
      expect_status("UnaryCall", stub_->UnaryCall(&ctx, req, &resp), StatusCode::UNKNOWN, &msg);
    }
    if (!duplex)
      return;
    ClientContext ctx;
    set_deadline(ctx);
    auto s = stub_->FullDuplexCall(&ctx);
    StreamingOutputCallRequest req;
    req.mutable_response_status()->set_code(2);
    req.mutable_response_status()->set_message(msg);
    s->Write(req);
    s->WritesDone();
    StreamingOutputCallResponse resp;
    while (s->Read(&resp)) {
    }
    expect_status("FullDuplexCall", s->Finish(), StatusCode::UNKNOWN, &msg);
  }

  std::unique_ptr<TestService::Stub> stub_;
  std::unique_ptr<UnimplementedService::Stub> unimpl_;
};

struct Case {
  const char *name;
  void (Cases::*run)();
};

// The 18 cases perfc runs (tests/interop/CMakeLists.txt), in the same order.
const Case kCases[] = {
    {"empty_unary", &Cases::empty_unary},
    {"large_unary", &Cases::large_unary},
    {"client_streaming", &Cases::client_streaming},
    {"server_streaming", &Cases::server_streaming},
    {"ping_pong", &Cases::ping_pong},
    {"empty_stream", &Cases::empty_stream},
    {"cancel_after_begin", &Cases::cancel_after_begin},
    {"cancel_after_first_response", &Cases::cancel_after_first_response},
    {"timeout_on_sleeping_server", &Cases::timeout_on_sleeping_server},
    {"custom_metadata", &Cases::custom_metadata},
    {"status_code_and_message", &Cases::status_code_and_message},
    {"special_status_message", &Cases::special_status_message},
    {"unimplemented_method", &Cases::unimplemented_method},
    {"unimplemented_service", &Cases::unimplemented_service},
    {"client_compressed_unary", &Cases::client_compressed_unary},
    {"server_compressed_unary", &Cases::server_compressed_unary},
    {"client_compressed_streaming", &Cases::client_compressed_streaming},
    {"server_compressed_streaming", &Cases::server_compressed_streaming},
};

int usage() {
  std::fprintf(stderr,
               "usage: interop-client-cpp --server_host H --server_port P --test_case NAME|all\n"
               "         [--use_tls true|false] [--use_test_ca true|false]\n"
               "         [--server_host_override NAME] [--tls_dir DIR]\n"
               "test cases:");
  for (const Case &c : kCases)
    std::fprintf(stderr, " %s", c.name);
  std::fputc('\n', stderr);
  return 2;
}

// "true"/"false" (also 1/0): 1, 0, or -1 for anything else.
int parse_bool(const std::string &v) {
  if (v == "true" || v == "1")
    return 1;
  if (v == "false" || v == "0")
    return 0;
  return -1;
}

bool read_file(const std::string &path, std::string *out) {
  std::ifstream f(path, std::ios::binary);
  if (!f)
    return false;
  std::ostringstream os;
  os << f.rdbuf();
  *out = os.str();
  return true;
}

} // namespace

int main(int argc, char **argv) {
  std::map<std::string, std::string> flags = {
      {"server_host", "localhost"}, {"server_port", ""},      {"test_case", ""},
      {"use_tls", "false"},         {"use_test_ca", "true"},  {"server_host_override", ""},
      {"tls_dir", PERFC_INTEROP_CERT_DIR}};
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0)
      return usage();
    a = a.substr(2);
    std::string v;
    size_t eq = a.find('=');
    if (eq != std::string::npos) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else if (i + 1 < argc) {
      v = argv[++i];
    } else {
      std::fprintf(stderr, "interop-client-cpp: --%s needs a value\n", a.c_str());
      return usage();
    }
    auto it = flags.find(a);
    if (it == flags.end()) {
      std::fprintf(stderr, "interop-client-cpp: unknown flag --%s\n", a.c_str());
      return usage();
    }
    it->second = v;
  }
  int use_tls = parse_bool(flags["use_tls"]), test_ca = parse_bool(flags["use_test_ca"]);
  const std::string &port = flags["server_port"], &test_case = flags["test_case"];
  if (port.empty() || test_case.empty() || use_tls < 0 || test_ca < 0)
    return usage();
  bool all = test_case == "all";
  bool known = all;
  for (const Case &c : kCases)
    known = known || test_case == c.name;
  if (!known) {
    std::fprintf(stderr, "interop-client-cpp: unknown test case '%s'\n", test_case.c_str());
    return usage();
  }

  const std::string &host = flags["server_host"];
  std::string target =
      (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + port;
  grpc::ChannelArguments args;
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (use_tls) {
    grpc::SslCredentialsOptions o;
    if (test_ca) {
      std::string ca_path = flags["tls_dir"] + "/ca.crt";
      if (!read_file(ca_path, &o.pem_root_certs)) {
        std::fprintf(stderr, "interop-client-cpp: cannot read %s\n", ca_path.c_str());
        return 1;
      }
    }
    creds = grpc::SslCredentials(o);
    if (!flags["server_host_override"].empty())
      args.SetSslTargetNameOverride(flags["server_host_override"]);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  auto channel = grpc::CreateCustomChannel(target, creds, args);
  Cases cases(channel);

  int failed = 0;
  for (const Case &c : kCases) {
    if (!all && test_case != c.name)
      continue;
    try {
      (cases.*c.run)();
      std::printf("interop-client-cpp: %s: PASS\n", c.name);
      std::fflush(stdout);
    } catch (const Failure &f) {
      std::fprintf(stderr, "interop-client-cpp: %s: FAIL: %s\n", c.name, f.what());
      failed++;
    }
  }
  return failed ? 1 : 0;
}
