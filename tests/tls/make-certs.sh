#!/bin/sh
# make-certs.sh DIR — writes a throwaway CA and the certificates the TLS
# tests need into DIR, with the openssl CLI only (no faketime):
#   ca.crt ca.key           the test CA
#   server.crt server.key   leaf for localhost and 127.0.0.1 (SAN), by the CA
#   client.crt client.key   client certificate (clientAuth), by the CA
#   expired.crt expired.key valid 2020-01-01 .. 2020-01-02, by the CA
#   notyet.crt notyet.key   valid from 2099-01-01, by the CA
#   other-ca.crt            an unrelated CA (client certs do not chain to it)
#   other.key               a key that matches none of the certificates
#   garbage.pem             text that is not PEM
#   encrypted.key           server.key encrypted with a passphrase
# Room: tests/tls. Used by test_tls.c and interop/test_grpcio.py; also how
# docs/tls.md shows generating certificates for local development.
set -eu
dir=${1:?usage: make-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
# Quiet RSA-2048 keys: EC would be faster, but RSA is what most users deploy.
key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }

key ca.key
openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=perfc test CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt
key other-ca.key
openssl req -x509 -new -key other-ca.key -sha256 -days 3650 -subj "/CN=perfc other CA" \
  -addext "basicConstraints=critical,CA:TRUE" -out other-ca.crt

cat > leaf.ext <<'EXT'
[server]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
[client]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
EXT

# sign NAME CN EXTSECTION: a key and a CA-signed certificate valid 1 year.
sign() {
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -set_serial "$4" \
    -days 365 -sha256 -extfile leaf.ext -extensions "$3" -out "$1.crt" 2>/dev/null
}
sign server localhost server 1001
sign client "perfc test client" client 1002

# Past and future validity need explicit dates, which OpenSSL 3.0's
# `x509 -req` cannot set; `openssl ca` can, given a minimal CA database.
mkdir -p ca.db
: > ca.db/index.txt
echo 1003 > ca.db/serial
cat > ca.cnf <<'CNF'
[ca]
default_ca = test
[test]
dir = ./ca.db
database = $dir/index.txt
serial = $dir/serial
new_certs_dir = $dir
certificate = ./ca.crt
private_key = ./ca.key
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
[server]
basicConstraints = CA:FALSE
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
CNF
dated() {
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=localhost" -out "$1.csr"
  openssl ca -batch -config ca.cnf -extensions server -notext \
    -startdate "$2" -enddate "$3" -in "$1.csr" -out "$1.crt" 2>/dev/null
}
dated expired 20200101000000Z 20200102000000Z
dated notyet 20990101000000Z 20991231000000Z

key other.key
printf 'this is not a certificate\nnor a key\n' > garbage.pem
openssl pkey -in server.key -aes256 -passout pass:secret -out encrypted.key
rm -f ./*.csr leaf.ext
