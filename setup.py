"""The compiled parts: the WAT record framing and scan of ingestion (metaclip_tasks/ingest/_watscan.c) and
its gzip members inflated by libdeflate (metaclip_tasks/ingest/_inflate.c), the pair uids' sha224
(metaclip_tasks/ingest/_uids.c, OpenSSL's libcrypto) and the token engine of matching
(metaclip_tasks/curation/_match.c); the rest of the project's metadata is in pyproject.toml."""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Werror"]  # every warning an error: the scanner reads untrusted web input
CODES = "metaclip_tasks/_codes.h"  # the codes each extension shares with Python, made into module constants

setup(
    ext_modules=[
        Extension(
            "metaclip_tasks.ingest._watscan",
            ["metaclip_tasks/ingest/_watscan.c"],
            depends=[CODES],
            extra_compile_args=FLAGS,
        ),
        Extension(
            "metaclip_tasks.ingest._inflate",
            ["metaclip_tasks/ingest/_inflate.c"],
            depends=[CODES],
            extra_compile_args=FLAGS,
            libraries=["deflate"],
        ),
        Extension(
            "metaclip_tasks.ingest._uids",
            ["metaclip_tasks/ingest/_uids.c"],
            extra_compile_args=FLAGS,
            libraries=["crypto"],
        ),
        Extension(
            "metaclip_tasks.curation._match",
            ["metaclip_tasks/curation/_match.c"],
            depends=[CODES],
            extra_compile_args=FLAGS,
        ),
    ]
)
