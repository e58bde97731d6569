"""The languages the sandbox runs: where the code goes, how it is compiled and run (SandboxFusion's names).

Every toolchain is the one on the service's PATH that Debian's packages install; a language whose
toolchain is missing is refused with the package to install. Compilers and programs run in the same
jail (compile first, in its own jail, with ``compile_timeout``; the artifacts are then the run's files).

Address space: the memory limit (``memory_limit_MB``) is an RLIMIT_AS for native programs, Python and
Bash. The JVM and V8 reserve address space they never touch (class space, code cache, heap cages),
so for Java and JavaScript the limit caps the heap (``-Xmx`` / ``--max-old-space-size``) and the
address-space limit is that plus the runtime's reserve.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field

JAIL_PATH = "/usr/local/bin:/usr/bin:/bin"  # the PATH programs and compilers see
# the JVM small: one GC thread, no tiered C2, small reserved spaces; -Xshare off is not needed
_JVM = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:CICompilerCount=1", "-XX:ReservedCodeCacheSize=32m",
        "-XX:CompressedClassSpaceSize=32m", "-XX:MaxMetaspaceSize=128m", "-Xss8m", "-XX:-UsePerfData")


@dataclass(frozen=True)
class Language:
    source: str  # the file the code is written to
    run: tuple[str, ...]  # argv in the program's folder; {python}, {heap_mb}, {main} are filled in
    compile: tuple[str, ...] | None = None
    artifacts: tuple[str, ...] = ()  # glob patterns the compile leaves for the run
    package: str = ""  # Debian package with the toolchain
    reserve_mb: int = 0  # address space the runtime reserves beyond its heap
    env: dict = field(default_factory=dict)

    @property
    def tool(self) -> str:
        return (self.compile or self.run)[0]


LANGUAGES: dict[str, Language] = {
    "python": Language("main.py", ("{python}", "-I", "-B", "main.py"), package="python3"),
    "bash": Language("main.sh", ("/bin/bash", "main.sh"), package="bash"),
    "cpp": Language("main.cpp", ("./main",), ("g++", "-std=c++17", "-O2", "-o", "main", "main.cpp", "-lpthread"),
                    ("main",), "g++"),
    "c": Language("main.c", ("./main",), ("gcc", "-std=c11", "-O2", "-o", "main", "main.c", "-lm"), ("main",), "gcc"),
    "java": Language("{main}.java", ("java", "-Xmx{heap_mb}m", *_JVM, "-cp", ".", "{main}"),
                     ("javac", "-J-Xmx512m", *(f"-J{f}" for f in _JVM), "-encoding", "UTF-8", "{main}.java"),
                     ("*.class",), "default-jdk-headless", reserve_mb=1024),
    "go": Language("main.go", ("./main",), ("go", "build", "-o", "main", "main.go"), ("main",), "golang-go",
                   env={"GO111MODULE": "off", "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false", "GOMAXPROCS": "2"}),
    "nodejs": Language("main.js", ("node", "--max-old-space-size={heap_mb}", "--stack-size=8000", "main.js"),
                       package="nodejs", reserve_mb=2048),
    "rust": Language("main.rs", ("./main",), ("rustc", "-O", "--edition", "2021", "-o", "main", "main.rs"), ("main",),
                     "rustc"),
}
COMPILE_MEMORY_MB = 2048  # address space for a compiler (g++ on a large template file, rustc's LLVM)


def java_main_class(code: str) -> str:
    """The public class a Java program names (its file must be called after it); Main when none."""
    found = re.search(r"\bpublic\s+(?:final\s+|abstract\s+)*class\s+([A-Za-z_$][\w$]*)", code)
    return found.group(1) if found else "Main"


def fill(argv: tuple[str, ...], **values) -> list[str]:
    return [a.format(**values) if "{" in a else a for a in argv]


def missing_toolchain(name: str) -> str | None:
    """Why ``name`` cannot run here, or None: its tool is not on the jail's PATH."""
    lang = LANGUAGES[name]
    tool = lang.tool
    if tool.startswith("{"):
        return None
    if (os.path.isabs(tool) and os.access(tool, os.X_OK)) or shutil.which(tool, path=JAIL_PATH):
        return None
    return (f"language '{name}' needs '{tool}' on {JAIL_PATH}, which this machine lacks: install it with "
            f"'apt-get install {lang.package}'")


def available() -> list[str]:
    return sorted(name for name in LANGUAGES if missing_toolchain(name) is None)
