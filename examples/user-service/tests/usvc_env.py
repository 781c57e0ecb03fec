"""usvc_env — PostgreSQL, Redis and user-service started for a test or the
demo, all on loopback in one private directory; plus user.v1 message
classes built with python3-protobuf from the proto's descriptors.

Room: examples/user-service/tests. Nothing here touches a system service:
PostgreSQL comes from scripts/pg-up (its own cluster in DIR/pg), Redis is a
redis-server child with --save '' on a free port, and every process started
here is stopped by Env.stop() through its own pid.
"""
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(EXAMPLE))
WAIT_S = 30


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, what, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception:  # noqa: BLE001  (not ready yet)
            pass
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for " + what)


def load_messages():
    """user.v1 message classes: protoc writes a descriptor set (with the
    well-known imports and perfc/options.proto), python3-protobuf builds the
    classes from it; no grpc_tools code generation."""
    out = tempfile.mkstemp(suffix=".pb")[1]
    try:
        subprocess.run(["protoc", "-I", os.path.join(EXAMPLE, "proto"),
                        "-I", os.path.join(ROOT, "proto"), "-I", "/usr/include",
                        "--include_imports", "--descriptor_set_out=" + out,
                        "user/v1/user.proto"], check=True)
        with open(out, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    finally:
        os.unlink(out)
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    get = getattr(message_factory, "GetMessageClass", None)
    if get is None:
        factory = message_factory.MessageFactory(pool)
        get = factory.GetPrototype
    names = ["User", "CreateUserRequest", "GetUserRequest", "UpdateUserRequest",
             "DeleteUserRequest", "ListUsersRequest", "ListUsersResponse",
             "BatchGetUsersRequest", "BatchGetUsersResponse", "ImportUsersResponse"]
    m = {n: get(pool.FindMessageTypeByName("user.v1." + n)) for n in names}
    m["Empty"] = get(pool.FindMessageTypeByName("google.protobuf.Empty"))
    m["FieldMask"] = get(pool.FindMessageTypeByName("google.protobuf.FieldMask"))
    return m


class Stub:
    """user.v1.UserService through grpcio's generic multicallables."""
    KINDS = {"CreateUser": ("unary_unary", "CreateUserRequest", "User"),
             "GetUser": ("unary_unary", "GetUserRequest", "User"),
             "UpdateUser": ("unary_unary", "UpdateUserRequest", "User"),
             "DeleteUser": ("unary_unary", "DeleteUserRequest", "Empty"),
             "ListUsers": ("unary_unary", "ListUsersRequest", "ListUsersResponse"),
             "BatchGetUsers": ("unary_unary", "BatchGetUsersRequest", "BatchGetUsersResponse"),
             "StreamUsers": ("unary_stream", "ListUsersRequest", "User"),
             "ImportUsers": ("stream_unary", "CreateUserRequest", "ImportUsersResponse"),
             "SyncUsers": ("stream_stream", "GetUserRequest", "User")}

    def __init__(self, channel, msgs):
        for method, (kind, req, resp) in self.KINDS.items():
            setattr(self, method, getattr(channel, kind)(
                "/user.v1.UserService/" + method,
                request_serializer=msgs[req].SerializeToString,
                response_deserializer=msgs[resp].FromString))


class Env:
    """The three servers in DIR (default: a new directory under /tmp, which
    scripts/pg-up's cluster user can reach when running as root)."""

    def __init__(self, bin_dir, run_dir=None):
        self.bin_dir = os.path.abspath(bin_dir)
        self.own_dir = run_dir is None
        self.dir = run_dir or tempfile.mkdtemp(prefix="usvc-")
        os.makedirs(self.dir, exist_ok=True)
        # mkdtemp makes it 0700; pg-up's cluster user (as root) must reach pg/.
        os.chmod(self.dir, 0o755)
        self.pg_dir = os.path.join(self.dir, "pg")
        self.redis = None
        self.svc = None
        self.dsn = None
        self.redis_port = free_port()
        self.grpc_port = None
        self.metrics_port = None

    # PostgreSQL -----------------------------------------------------------
    def pg_up(self, restart=False):
        cmd = [os.path.join(ROOT, "scripts", "pg-up")]
        if restart:
            cmd.append("--restart")
        out = subprocess.run(cmd + [self.pg_dir, "users"], check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        self.dsn = out.strip().splitlines()[-1]
        return self.dsn

    def psql(self, sql):
        """Runs one statement with psql; returns its unaligned output."""
        psql = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]
        return subprocess.run([psql, "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1",
                               self.dsn, "-c", sql], check=True,
                              stdout=subprocess.PIPE, text=True).stdout.strip()

    def service_argv(self, redis_port=None):
        return [os.path.join(self.bin_dir, "user-service"),
                "--config", os.path.join(EXAMPLE, "config", "user-service.yaml"),
                "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                "--postgres", self.dsn,
                "--redis", "127.0.0.1:%d" % (redis_port or self.redis_port)]

    def pg_down(self):
        subprocess.run([os.path.join(ROOT, "scripts", "pg-down"), self.pg_dir],
                       check=True)

    # Redis ------------------------------------------------------------------
    def redis_up(self):
        rdir = os.path.join(self.dir, "redis")
        os.makedirs(rdir, exist_ok=True)
        with open(os.path.join(rdir, "log"), "ab") as log:
            self.redis = subprocess.Popen(
                ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", rdir],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: socket.create_connection(("127.0.0.1", self.redis_port), 1).close() or True,
                 "redis-server")

    def redis_kill(self):
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()
            self.redis = None

    # user-service -------------------------------------------------------------
    def service(self, name="user-service", extra_env=None, redis_port=None):
        """Starts one more user-service on the same PostgreSQL and Redis
        (a second replica); the caller stops it with Service.stop()."""
        env = dict(os.environ)
        # The shipped configuration names a replica host that exists only in
        # Kubernetes; empty means "read from the primary".
        env["PERFC_POSTGRES_REPLICA_DSN"] = ""
        env["PERFC_LOGGING_FORMAT"] = "logfmt"
        # A value of None removes the variable (e.g. to keep the shipped
        # replica DSN).
        for k, v in (extra_env or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return Service(self, os.path.join(self.dir, name + ".log"), env,
                       redis_port)

    def svc_up(self, extra_env=None):
        self.main = self.service(extra_env=extra_env)
        self.svc = self.main.proc
        self.grpc_port, self.metrics_port = self.main.grpc_port, self.main.metrics_port
        self.target = self.main.target

    def svc_stop(self):
        """SIGTERM, as an orchestrator would; returns the exit status."""
        if self.svc is None:
            return None
        rc = self.main.stop()
        self.svc = None
        return rc

    def metrics(self):
        return self.main.metrics()

    def up(self):
        try:
            self.pg_up()
            self.redis_up()
            self.svc_up()
        except BaseException:
            # Nothing started here may outlive a failed start-up.
            self.stop()
            raise
        return self

    def stop(self):
        self.svc_stop()
        self.redis_kill()
        if os.path.isdir(self.pg_dir):
            self.pg_down()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class Service:
    """One user-service process with the shipped configuration, local
    addresses from flags and ports picked by the kernel (read from its log)."""

    def __init__(self, env, log_path, environ, redis_port=None):
        self.log = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(env.service_argv(redis_port), stdout=log,
                                         stderr=subprocess.STDOUT, env=environ)

        def ports():
            with open(self.log) as f:
                text = f.read()
            if self.proc.poll() is not None:
                raise SystemExit("user-service exited with %d; log:\n%s"
                                 % (self.proc.returncode, text))
            g = re.search(r"serving user\.v1\.UserService on \S+ \(port (\d+)\)", text)
            m = re.search(r"metrics on port (\d+)", text)
            return g and m and (int(g.group(1)), int(m.group(1)))
        self.grpc_port, self.metrics_port = wait_for(ports, "user-service")
        self.target = "127.0.0.1:%d" % self.grpc_port

    def stop(self):
        """SIGTERM; returns the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def metrics(self):
        """The /metrics page as {series: value} (labels included)."""
        text = urllib.request.urlopen(
            "http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=5).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out
