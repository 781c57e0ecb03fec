#!/usr/bin/python3
"""scripts/demo-grpc-web.py HOST:PORT ID — GetUser over gRPC-Web, as a
browser's grpc-web client sends it (grpc/grpc doc/PROTOCOL-WEB.md): one
HTTP/1.1 POST, application/grpc-web+proto, the request as a length-prefixed
frame; the answer's frames are the User and a trailers frame (flag 0x80).
Message classes from the proto's descriptors (examples/user-service/tests/
usvc_env.py); the framing is written out here."""
import http.client
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "examples", "user-service", "tests"))
import usvc_env  # noqa: E402

host, port = sys.argv[1].rsplit(":", 1)
M = usvc_env.load_messages()
msg = M["GetUserRequest"](id=int(sys.argv[2])).SerializeToString()
frame = b"\x00" + len(msg).to_bytes(4, "big") + msg
c = http.client.HTTPConnection(host, int(port), timeout=10)
c.request("POST", "/user.v1.UserService/GetUser", body=frame,
          headers={"Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1"})
r = c.getresponse()
data = r.read()
print("POST /user.v1.UserService/GetUser  (request frame %s)" % frame.hex(" "))
print("-> HTTP %d %s, %d bytes" % (r.status, r.getheader("content-type"), len(data)))
i = 0
while i < len(data):
    flag, n = data[i], int.from_bytes(data[i + 1:i + 5], "big")
    payload = data[i + 5:i + 5 + n]
    i += 5 + n
    if flag & 0x80:
        print("   trailers frame: " + " ".join(l for l in payload.decode().split("\r\n") if l))
    else:
        u = M["User"].FromString(payload)
        print("   message frame:  User{id: %d, name: %r, email: %r}" % (u.id, u.name, u.email))
