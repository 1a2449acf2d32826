"""Test PKI with the openssl command line, independent of the agent's own code: a CA, and
leaf certificates of any shape (SVIDs, expired ones, CAs posing as leaves, two URI SANs)."""
import os
import subprocess


def run(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class Pki:
    def __init__(self, directory, name="ca"):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.cert = os.path.join(directory, f"{name}.crt")
        self.key = os.path.join(directory, f"{name}.key")
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", f"/O=test/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(self, name, uris, days=1, ca=False, expired=False, key_usage="digitalSignature",
             sans=()):
        """Writes name.crt/name.key signed by this CA; returns (cert, key) paths."""
        key = os.path.join(self.dir, f"{name}.key")
        csr = os.path.join(self.dir, f"{name}.csr")
        crt = os.path.join(self.dir, f"{name}.crt")
        ext = os.path.join(self.dir, f"{name}.ext")
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            key, "-out", csr, "-subj", f"/O=test/CN={name}")
        with open(ext, "w") as f:
            f.write(f"basicConstraints=critical,CA:{'TRUE' if ca else 'FALSE'}\n")
            f.write(f"keyUsage=critical,{key_usage}\n")
            f.write("extendedKeyUsage=serverAuth,clientAuth\n")
            alt = [f"URI:{u}" for u in uris] + list(sans)  # sans: "IP:127.0.0.1", "DNS:x"
            if alt:
                f.write("subjectAltName=" + ",".join(alt) + "\n")
        args = ["x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                "-CAcreateserial", "-out", crt, "-extfile", ext]
        # "-days 0": valid from now until now, expired a second later (OpenSSL 3.0 has no
        # -not_after to back-date a certificate).
        args += ["-days", "0" if expired else str(days)]
        run(*args)
        os.chmod(key, 0o600)
        return crt, key
