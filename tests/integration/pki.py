"""Test PKI with the openssl command line, independent of the agent's own code: a CA, and
leaf certificates of any shape (SVIDs, expired ones, CAs posing as leaves, two URI SANs,
no or a non-critical keyUsage, a validity of a few seconds)."""
import datetime
import os
import subprocess


def run(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _asn1_time(seconds_from_now):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
        seconds=seconds_from_now)
    return t.strftime("%Y%m%d%H%M%SZ")


class Pki:
    def __init__(self, directory, name="ca"):
        self.dir = directory
        self.name = name
        os.makedirs(directory, exist_ok=True)
        self.cert = os.path.join(directory, f"{name}.crt")
        self.key = os.path.join(directory, f"{name}.key")
        # An SVID signing certificate: the X509-SVID specification (4.1, 4.3) wants
        # CA:TRUE and a critical keyUsage with keyCertSign.
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", f"/O=test/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(self, name, uris, days=1, ca=False, expired=False, key_usage="digitalSignature",
             key_usage_critical=True, sans=(), valid_for=None):
        """Writes name.crt/name.key signed by this CA; returns (cert, key) paths.

        key_usage=None leaves the extension out; valid_for=(start, end) gives the validity
        in seconds from now (e.g. (-60, 20): valid for the next 20 s)."""
        key = os.path.join(self.dir, f"{name}.key")
        csr = os.path.join(self.dir, f"{name}.csr")
        crt = os.path.join(self.dir, f"{name}.crt")
        ext = os.path.join(self.dir, f"{name}.ext")
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            key, "-out", csr, "-subj", f"/O=test/CN={name}")
        with open(ext, "w") as f:
            f.write(f"basicConstraints=critical,CA:{'TRUE' if ca else 'FALSE'}\n")
            if key_usage is not None:
                f.write(f"keyUsage={'critical,' if key_usage_critical else ''}{key_usage}\n")
            f.write("extendedKeyUsage=serverAuth,clientAuth\n")
            alt = [f"URI:{u}" for u in uris] + list(sans)  # sans: "IP:127.0.0.1", "DNS:x"
            if alt:
                f.write("subjectAltName=" + ",".join(alt) + "\n")
        if valid_for is not None:
            self._sign_with_dates(csr, crt, ext, *valid_for)
        else:
            args = ["x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                    "-CAcreateserial", "-out", crt, "-extfile", ext]
            # "-days 0": valid from now until now, expired a second later (OpenSSL 3.0 has
            # no -not_after to back-date a certificate).
            args += ["-days", "0" if expired else str(days)]
            run(*args)
        os.chmod(key, 0o600)
        return crt, key

    def _sign_with_dates(self, csr, crt, ext, start, end):
        """`openssl ca`, the one OpenSSL 3.0 command that takes exact dates."""
        db = os.path.join(self.dir, "ca-db")
        os.makedirs(db, exist_ok=True)
        index, serial = os.path.join(db, "index.txt"), os.path.join(db, "serial")
        if not os.path.exists(index):
            open(index, "w").close()
            with open(serial, "w") as f:
                f.write("1000\n")
        conf = os.path.join(db, "ca.cnf")
        with open(conf, "w") as f:
            f.write("[ca]\ndefault_ca = d\n[d]\n"
                    f"database = {index}\nserial = {serial}\nnew_certs_dir = {db}\n"
                    "default_md = sha256\npolicy = p\nunique_subject = no\n"
                    "copy_extensions = none\n[p]\norganizationName = optional\n"
                    "commonName = supplied\n")
        run("ca", "-batch", "-notext", "-config", conf, "-cert", self.cert, "-keyfile", self.key,
            "-in", csr, "-out", crt, "-extfile", ext, "-startdate", _asn1_time(start),
            "-enddate", _asn1_time(end))
