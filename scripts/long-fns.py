#!/usr/bin/env python3
# long-fns.py: list the Rust functions under src/ whose length exceeds a limit.
#
# Usage: scripts/long-fns.py [LIMIT]      (LIMIT defaults to 100 lines)
#
# A function's length runs from the line of its `fn` keyword to the line of its closing brace,
# both included. Only `fn` items with a body count (free functions, methods in impl blocks,
# functions in nested modules and in `#[cfg(test)] mod tests`, functions nested in functions);
# declarations ending in `;` (trait methods, extern blocks) are skipped, and closures are part of
# the function around them. Comments, string literals (plain, byte, raw `r#".."#`), and char
# literals (`'{'`) are blanked out before braces are matched; lifetimes and labels (`'a`) are
# left alone. Output: `path:line: name (N lines)`, longest first. Exit status: 1 when any
# function is listed, 0 when none, 2 for a bad argument. Python 3 standard library only.

import os
import re
import sys

DEFAULT_LIMIT = 100


def is_ident_char(c):
    return c.isalnum() or c == "_"


def blank(chars, start, end):
    """Replaces chars[start:end] with spaces, keeping newlines (so line numbers stay right)."""
    for k in range(start, end):
        if chars[k] != "\n":
            chars[k] = " "


def raw_string_at(text, i):
    """If a raw string literal (r"..", r#".."#, br"..", cr#".."#) starts at i, return the
    index just past its end; else None. `i` points at the `r`."""
    n = len(text)
    prev = text[i - 1] if i > 0 else ""
    if prev and is_ident_char(prev):
        # Allow the b/c prefix (br"..", cr".."), but only at the start of a token.
        if prev not in "bc":
            return None
        before = text[i - 2] if i > 1 else ""
        if before and is_ident_char(before):
            return None
    j = i + 1
    while j < n and text[j] == "#":
        j += 1
    if j >= n or text[j] != '"':
        return None  # r#ident (a raw identifier) or a plain identifier starting with r
    hashes = j - (i + 1)
    closing = '"' + "#" * hashes
    end = text.find(closing, j + 1)
    if end < 0:
        return n
    return end + len(closing)


def char_literal_end(text, i):
    """If a char literal ('x', '{', '\\n', '\\u{..}', b'x') starts at the quote at i, return
    the index just past it; else None (a lifetime or a label such as 'a or 'outer)."""
    n = len(text)
    if i + 1 >= n:
        return None
    if text[i + 1] == "\\":
        # An escape: skip the backslash and the escaped char, then find the closing quote.
        j = i + 3
        while j < n and text[j] != "'" and text[j] != "\n":
            j += 1
        if j < n and text[j] == "'":
            return j + 1
        return None
    if text[i + 1] != "\n" and i + 2 < n and text[i + 2] == "'":
        return i + 3
    return None


def clean(text):
    """The source with comments, strings and char literals blanked out."""
    chars = list(text)
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        if c == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            blank(chars, i, end)
            i = end
        elif c == "/" and text.startswith("/*", i):
            # Block comments nest in Rust.
            depth = 0
            j = i
            while j < n:
                if text.startswith("/*", j):
                    depth += 1
                    j += 2
                elif text.startswith("*/", j):
                    depth -= 1
                    j += 2
                    if depth == 0:
                        break
                else:
                    j += 1
            blank(chars, i, j)
            i = j
        elif c == "r" and (end := raw_string_at(text, i)) is not None:
            blank(chars, i, end)
            i = end
        elif c == '"':
            # A plain, byte (b"..") or C (c"..") string: the prefix letter is harmless.
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            end = min(j + 1, n)
            blank(chars, i, end)
            i = end
        elif c == "'":
            end = char_literal_end(text, i)
            if end is None:
                i += 1  # a lifetime or a label
            else:
                blank(chars, i, end)
                i = end
        else:
            i += 1
    return "".join(chars)


FN_RE = re.compile(r"(?<![\w#$])fn\s+(r#)?([^\W\d]\w*)")


def body_start(code, pos):
    """From the end of a fn's name, the index of the `{` that opens its body, or None when
    the signature ends with `;` (no body)."""
    n = len(code)
    paren = 0  # () and []
    angle = 0  # <> of generics
    j = pos
    while j < n:
        c = code[j]
        if c in "([":
            paren += 1
        elif c in ")]":
            paren = max(0, paren - 1)
        elif c == "<":
            angle += 1
        elif c == ">":
            # `->` and `=>` are not closing angle brackets.
            if j > 0 and code[j - 1] in "-=":
                pass
            else:
                angle = max(0, angle - 1)
        elif c == "{" and paren == 0 and angle == 0:
            return j
        elif c == ";" and paren == 0 and angle == 0:
            return None
        elif c == "}" and paren == 0 and angle == 0:
            return None  # malformed: ran out of the enclosing block
        j += 1
    return None


def matching_brace(code, open_idx):
    depth = 0
    for j in range(open_idx, len(code)):
        c = code[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return j
    return None


def functions(text):
    """Yields (name, first_line, line_count) for every fn with a body in `text`."""
    code = clean(text)
    line_starts = [0]
    for k, c in enumerate(code):
        if c == "\n":
            line_starts.append(k + 1)

    def line_of(idx):
        # Binary search over line starts; 1-based.
        lo, hi = 0, len(line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if line_starts[mid] <= idx:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    for m in FN_RE.finditer(code):
        start = body_start(code, m.end())
        if start is None:
            continue
        end = matching_brace(code, start)
        if end is None:
            continue
        first = line_of(m.start())
        last = line_of(end)
        yield (m.group(1) or "") + m.group(2), first, last - first + 1


def main(argv):
    limit = DEFAULT_LIMIT
    if len(argv) > 2 or (len(argv) == 2 and argv[1] in ("-h", "--help")):
        print("usage: scripts/long-fns.py [LIMIT]", file=sys.stderr)
        return 2 if len(argv) > 2 else 0
    if len(argv) == 2:
        try:
            limit = int(argv[1])
        except ValueError:
            print(f"long-fns.py: LIMIT must be a whole number, not {argv[1]!r}", file=sys.stderr)
            return 2
        if limit < 0:
            print("long-fns.py: LIMIT must not be negative", file=sys.stderr)
            return 2
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = os.path.join(root, "src")
    found = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            rel = os.path.relpath(path, root)
            for fn_name, line, count in functions(text):
                if count > limit:
                    found.append((count, rel, line, fn_name))
    found.sort(key=lambda t: (-t[0], t[1], t[2]))
    for count, rel, line, fn_name in found:
        print(f"{rel}:{line}: {fn_name} ({count} lines)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
