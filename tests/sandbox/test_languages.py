"""Compiled and interpreted languages under the same jail, with SandboxFusion's compile and run results."""

import pytest

from rlcamp.sandbox.client import HTTPSandbox
from rlcamp.sandbox.languages import missing_toolchain

# each reads a line from stdin and prints "hello <line>"; then a compile error and a runtime error of each
HELLO = {
    "python": "print('hello', input())",
    "bash": "read x; echo hello $x",
    "cpp": "#include <iostream>\n#include <string>\nint main() { std::string s; std::getline(std::cin, s); "
           "std::cout << \"hello \" << s << std::endl; }",
    "c": "#include <stdio.h>\nint main(void) { char s[64]; if (!fgets(s, 64, stdin)) return 2; printf(\"hello %s\", s); }",
    "java": "import java.util.Scanner;\npublic class Solution { public static void main(String[] a) { "
            "System.out.println(\"hello \" + new Scanner(System.in).nextLine()); } }",
    "go": "package main\nimport (\"bufio\"; \"fmt\"; \"os\")\nfunc main() { s := bufio.NewScanner(os.Stdin); s.Scan(); "
          "fmt.Println(\"hello \" + s.Text()) }",
    "nodejs": "const s = require('fs').readFileSync(0, 'utf8').trim(); console.log('hello ' + s);",
    "rust": "use std::io::*;\nfn main() { let mut s = String::new(); stdin().read_line(&mut s).unwrap(); "
            "println!(\"hello {}\", s.trim()); }",
}
BROKEN = {"cpp": "a=b", "c": "int main(void) { return x; }", "java": "public class Main { void f( }",
          "go": "package main\nfunc main() { x := }", "rust": "fn main() { let x: i32 = \"no\"; }"}
CRASH = {"python": "import sys; sys.exit(3)", "bash": "exit 3", "cpp": "int main() { return 3; }",
         "c": "int main(void) { return 3; }", "java": "public class Main { public static void main(String[] a) { "
         "System.exit(3); } }", "go": "package main\nimport \"os\"\nfunc main() { os.Exit(3) }",
         "nodejs": "process.exit(3)", "rust": "fn main() { std::process::exit(3); }"}


def need(language):
    why = missing_toolchain(language)
    if why:
        pytest.skip(why)


@pytest.fixture(scope="module")
def client(service):
    return HTTPSandbox(service["run_url"], timeout_s=120)


@pytest.mark.parametrize("language", sorted(HELLO))
def test_a_program_reads_stdin_and_prints(client, language):
    need(language)
    result = client.run({"code": HELLO[language], "language": language, "stdin": "world\n", "run_timeout": 10,
                         "compile_timeout": 60})
    assert result["status"] == "Success", result
    assert result["run_result"]["stdout"].strip() == "hello world"
    compiled = language in BROKEN
    assert (result["compile_result"] is not None) == compiled
    if compiled:
        assert result["compile_result"]["status"] == "Finished" and result["compile_result"]["return_code"] == 0


@pytest.mark.parametrize("language", sorted(BROKEN))
def test_a_compile_error_is_reported_as_sandboxfusion_does(client, language):
    need(language)
    result = client.run({"code": BROKEN[language], "language": language, "compile_timeout": 60})
    assert result["status"] == "Failed" and result["run_result"] is None, result
    compiled = result["compile_result"]
    assert compiled["status"] == "Finished" and compiled["return_code"] != 0 and compiled["stderr"], compiled


@pytest.mark.parametrize("language", sorted(CRASH))
def test_an_exit_code_is_a_runtime_failure(client, language):
    need(language)
    result = client.run({"code": CRASH[language], "language": language, "compile_timeout": 60})
    assert result["status"] == "Failed" and result["run_result"]["return_code"] == 3, result


def test_a_compiled_program_that_loops_times_out(client):
    need("c")
    result = client.run({"code": "int main(void) { for (;;) {} }", "language": "c", "run_timeout": 1})
    assert result["compile_result"]["return_code"] == 0
    assert result["run_result"]["status"] == "TimeLimitExceeded"


def test_the_compiler_is_jailed_too(client):
    """A compile is a program of the request's uid: it cannot read the service's files either."""
    need("c")
    result = client.run({"code": '#include "/root/.bashrc"\nint main(void) { return 0; }', "language": "c"})
    assert result["status"] == "Failed" and result["run_result"] is None
    assert result["compile_result"]["return_code"] != 0
    assert "No such file" in result["compile_result"]["stderr"] or "Permission denied" in result["compile_result"]["stderr"]


def test_an_unknown_language_or_a_missing_toolchain_is_a_clear_error(client, monkeypatch):
    from rlcamp.sandbox import languages

    monkeypatch.setattr(languages.shutil, "which", lambda *a, **k: None)
    why = languages.missing_toolchain("go")
    assert "apt-get install golang-go" in why and "'go'" in why
    result = client.run({"code": "x", "language": "cobol"})
    assert result["status"] == "SandboxError" and "not supported" in result["message"]
