"""scripts/install-deps installs only what the project uses: each package it lists has a
use in the tree (a build file, a test, a bench or a script), named here. A package added
without one, or one whose last use went away, fails this test."""
import glob
import os
import re
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))

# package (Debian name / RPM name) -> (files, a pattern showing the use in one of them)
BUILD = ("CMakeLists.txt", "*/CMakeLists.txt", "tests/*/CMakeLists.txt", "Makefile")
TESTS = ("tests/*/*.py", "tests/*/*/*.py", "bench/*", "scripts/*")
USES = {
    ("build-essential", "gcc", "make"): (BUILD, r"project\(mesh-agent|^all:"),
    ("cmake",): (BUILD, r"cmake_minimum_required"),
    ("pkg-config", "pkgconf-pkg-config"): (BUILD, r"pkg_check_modules"),
    ("clang",): (BUILD, r"CC=clang"),
    ("libclang-rt-14-dev", "compiler-rt"): (BUILD, r"-fsanitize=fuzzer"),
    ("libuv1-dev", "libuv-devel"): (BUILD, r"\blibuv\b"),
    ("libcurl4-openssl-dev", "libcurl-devel"): (BUILD, r"\blibcurl\b"),
    ("libjansson-dev", "jansson-devel"): (BUILD, r"\bjansson\b"),
    ("libssl-dev", "openssl-devel"): (BUILD, r"OpenSSL|openssl"),
    ("libcmocka-dev", "libcmocka-devel"): (BUILD, r"\bcmocka\b"),
    ("libyaml-dev", "libyaml-devel"): (BUILD, r"yaml-0\.1"),
    ("libc-ares-dev", "c-ares-devel"): (BUILD, r"\blibcares\b"),
    ("zlib1g-dev", "zlib-devel"): (BUILD, r"IMPORTED_TARGET zlib\b"),
    ("libnftables-dev", "nftables-devel"): (BUILD, r"IMPORTED_TARGET libnftables\b"),
    ("libnghttp2-dev", "libnghttp2-devel"): (BUILD, r"IMPORTED_TARGET libnghttp2\b"),
    ("nghttp2-client", "nghttp2"): (TESTS, r'which\("nghttp"\)'),
    ("python3-h2",): (TESTS, r"^import h2\b|^    import h2\b"),
    ("nftables",): (TESTS, r'"nft", "-j"'),
    ("python3",): (BUILD, r"Python3_EXECUTABLE"),
    ("python3-yaml", "python3-pyyaml"): (TESTS, r"^import yaml"),
    ("curl",): (TESTS, r"\bcurl -"),
    ("iproute2", "iproute"): (TESTS, r'\["ip", "link"'),
    ("util-linux",): (TESTS, r'"unshare"|"setpriv"|"taskset"'),
    ("nginx-light", "nginx"): (TESTS, r'"nginx"'),
    ("haproxy",): (TESTS, r'"haproxy"'),
    ("wrk",): (TESTS, r'"wrk"'),
    ("prometheus", "golang-github-prometheus-promtool"): (TESTS, r"promtool"),
    ("bind9-dnsutils", "bind-utils"): (TESTS, r'which\("dig"\)'),
    ("dnsperf",): (TESTS, r'"dnsperf"'),
    ("systemd",): (TESTS, r'"systemd-analyze"'),
    ("valgrind",): (TESTS, r"valgrind"),
    ("strace",): (TESTS, r'"strace"'),
    ("lintian",): (TESTS, r'"lintian"'),
    ("rpm", "rpm-build"): (TESTS + BUILD, r'"rpm"|CPACK_GENERATOR RPM'),
    ("dpkg-dev", "dpkg"): (BUILD + ("packaging/CMakeLists.txt",), r"SHLIBDEPS ON|dpkg-deb"),
    ("openssl",): (TESTS, r'"openssl"|^openssl |\bopenssl x509'),
    ("chromium",): (TESTS, r'"chromium"'),
    ("chromium-driver", "chromedriver"): (TESTS, r'"chromedriver"'),
    ("python3-selenium",): (TESTS, r"^from selenium import"),
}


def packages(var):
    with open(os.path.join(ROOT, "scripts", "install-deps")) as f:
        text = f.read()
    m = re.search(var + r'="([^"]*)"', text)
    return m.group(1).split()


def used(files, pattern):
    for g in files:
        for path in glob.glob(os.path.join(ROOT, g)):
            if not os.path.isfile(path) or path.endswith("install-deps") or \
                    path == os.path.abspath(__file__):
                continue
            with open(path, errors="replace") as f:
                if re.search(pattern, f.read(), re.M):
                    return path
    return None


class InstallDepsTest(unittest.TestCase):
    def check(self, var):
        for pkg in packages(var):
            keys = [k for k in USES if pkg in k]
            self.assertTrue(keys, f"{var}: '{pkg}' has no known use; if the project needs it, "
                                  "name its use in USES, else remove it")
            files, pattern = USES[keys[0]]
            self.assertIsNotNone(used(files, pattern),
                                 f"{var}: '{pkg}' is installed but nothing uses it any more "
                                 f"(looked for /{pattern}/ in {files})")

    def test_debian_packages_are_used(self):
        self.check("DEB_PKGS")

    def test_rpm_packages_are_used(self):
        self.check("RPM_PKGS")

    def test_etcd_is_not_installed(self):
        for var in ("DEB_PKGS", "RPM_PKGS"):
            self.assertFalse([p for p in packages(var) if "etcd" in p], var)


if __name__ == "__main__":
    unittest.main(verbosity=2)
