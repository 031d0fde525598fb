#!/usr/bin/env python3
"""Mutation testing of the dma-buf and udmabuf KUnit suites.

Deliberate breakages ("mutants") of drivers/dma-buf/ are compiled into one kernel, each behind
a test of the boot parameter dma_buf_mutant=N, so that one build serves many mutants and each
mutant costs one boot. Mutant 0 is the clean series and must pass on both configurations with
no kernel warning and no skipped case (the kernels boot with hugepages=4, so the hugetlb cases
must run).

    mutation-test.py [--only N,...] [--sample K] [--seed S] [--keep-logs DIR]

Two sets of mutants:
  - chosen mutants (CHOSEN below), each written by hand and naming the KUnit case(s) that must
    fail; run on the configurations they name (CONFIG_DMABUF_MOVE_NOTIFY=y, =n or both);
  - mechanical mutants, generated over drivers/dma-buf/dma-buf.c and dma-resv.c of the
    patched tree: each if-condition negated, each &&/|| condition weakened by dropping one
    operand, each call that takes or releases a lock, pins, unpins, waits or notifies removed,
    each DMA direction and dma_resv usage constant swapped. Only code compiled in the
    configuration is mutated. A sample of K (default 24) is drawn with a seeded random
    generator (default seed 20; the seed, the candidate count and the sample are printed),
    and run on CONFIG_DMABUF_MOVE_NOTIFY=n, Debian's setting, where the pin-on-map code is
    live. Any KUnit case may kill one.

A mutant is killed only when a case it names (for mechanical ones: any case) reports an
assertion or expectation failure in a boot that otherwise ran to the end. A boot that crashed
(Oops, BUG, a KUnit case that faulted or timed out), hung (qemu killed after a timeout) or did
not finish the suites is reported as "crashed" and is not a kill; a mutant whose named cases
all pass survives, whatever else failed. The score counts kills only. Chosen mutants must all
be killed (the test fails otherwise); mechanical survivors and crashes are listed as TAP TODO
points with EQUIVALENT's argument where there is one, so that the table is the report.

Three kernels: tinyconfig + mutation.fragment with CONFIG_DMABUF_MOVE_NOTIFY on and off for
the chosen mutants, and off for the mechanical sample. The source is the patched tree of
build-kernel.sh --source-dir, hard-linked into $DMABROKER_CACHE/kernel-mutants/src with the
mutated files replaced; one object tree serves all three. Each image is kept under a key of
its mutated sources and configuration, so an unchanged series and seed boots without building.
Prints TAP, a table of every mutant, the time of each stage and the score.
"""

import argparse
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.environ.get("DMABROKER_CACHE", "/var/cache/dmabroker")
WORK = os.path.join(CACHE, "kernel-mutants")
SUITES = ("dma-buf-locking", "udmabuf")
CMDLINE = "console=ttyS0 panic=-1 hugepages=4"
BOOT_TIMEOUT = 60  # seconds of qemu per boot; a clean boot takes 3 s, the slowest mutant 15

L = "dma-buf-locking."
U = "udmabuf."

# (name, file, configs, expected cases, [(original, mutated), ...]): each original must occur
# exactly once in the patched file; "M" in a mutated text stands for the mutant's number.
CHOSEN = [
    ("static importers no longer wait for the kernel fences", "dma-buf.c", "y",
     [L + "dma_buf_test_fence_wait"],
     [("\tif (!dma_buf_attachment_is_dynamic(attach)) {\n\t\tret = dma_resv_wait_timeout(",
       "\tif (!dma_buf_attachment_is_dynamic(attach) && dma_buf_mutant != M) {\n"
       "\t\tret = dma_resv_wait_timeout(")]),
    ("dynamic importers wait for the kernel fences too", "dma-buf.c", "y",
     [L + "dma_buf_test_fence_wait"],
     [("\tif (!dma_buf_attachment_is_dynamic(attach) && dma_buf_mutant != 1) {\n",
       "\tif ((!dma_buf_attachment_is_dynamic(attach) && dma_buf_mutant != 1) ||\n"
       "\t    dma_buf_mutant == M) {\n")]),
    ("dma_buf_move_notify() is a no-op", "dma-buf.c", "y",
     [L + "dma_buf_test_move_notify"],
     [("\tdma_resv_assert_held(dmabuf->resv);\n\n"
       "\tlist_for_each_entry(attach, &dmabuf->attachments, node)\n"
       "\t\tif (attach->importer_ops)\n",
       "\tdma_resv_assert_held(dmabuf->resv);\n\n"
       "\tif (dma_buf_mutant == M)\n\t\treturn;\n"
       "\tlist_for_each_entry(attach, &dmabuf->attachments, node)\n"
       "\t\tif (attach->importer_ops)\n")]),
    ("without MOVE_NOTIFY, no pin on map (and no unpin on unmap)", "dma-buf.c", "n",
     [L + "dma_buf_test_map"],
     [("\t\tif (!IS_ENABLED(CONFIG_DMABUF_MOVE_NOTIFY)) {\n\t\t\tr = attach->dmabuf->ops->pin(attach);",
       "\t\tif (!IS_ENABLED(CONFIG_DMABUF_MOVE_NOTIFY) && dma_buf_mutant != M) {\n"
       "\t\t\tr = attach->dmabuf->ops->pin(attach);"),
      ("\tif (IS_ERR(sg_table) && dma_buf_is_dynamic(attach->dmabuf) &&\n"
       "\t     !IS_ENABLED(CONFIG_DMABUF_MOVE_NOTIFY)) {\n",
       "\tif (IS_ERR(sg_table) && dma_buf_is_dynamic(attach->dmabuf) &&\n"
       "\t     !IS_ENABLED(CONFIG_DMABUF_MOVE_NOTIFY) && dma_buf_mutant != M) {\n"),
      ("\tif (dma_buf_is_dynamic(attach->dmabuf) &&\n"
       "\t    !IS_ENABLED(CONFIG_DMABUF_MOVE_NOTIFY))\n\t\tdma_buf_unpin(attach);",
       "\tif (dma_buf_is_dynamic(attach->dmabuf) &&\n"
       "\t    !IS_ENABLED(CONFIG_DMABUF_MOVE_NOTIFY) && dma_buf_mutant != M)\n"
       "\t\tdma_buf_unpin(attach);")]),
    ("detach unpins after dropping the lock", "dma-buf.c", "y",
     [L + "dma_buf_test_cached_at_attach", L + "dma_buf_test_attach_published",
      L + "dma_buf_test_cached_direction", L + "dma_buf_test_move_notify",
      L + "dma_buf_test_fdinfo", L + "dma_buf_test_fdinfo_locked",
      L + "dma_buf_test_fence_wait"],
     [("\t\tif (dma_buf_is_dynamic(attach->dmabuf))\n\t\t\tdmabuf->ops->unpin(attach);\n"
       "\t}\n\tlist_del(&attach->node);\n\n\tdma_resv_unlock(dmabuf->resv);\n",
       "\t\tif (dma_buf_is_dynamic(attach->dmabuf) && dma_buf_mutant != M)\n"
       "\t\t\tdmabuf->ops->unpin(attach);\n"
       "\t}\n\tlist_del(&attach->node);\n\n\tdma_resv_unlock(dmabuf->resv);\n"
       "\tif (dma_buf_mutant == M && attach->sgt && dma_buf_is_dynamic(dmabuf))\n"
       "\t\tdmabuf->ops->unpin(attach);\n")]),
    ("mmap is called with the lock held (the rule of 6.2 to 6.5)", "dma-buf.c", "y",
     [L + "dma_buf_test_unlocked_callbacks"],
     [("\tvma->vm_pgoff = pgoff;\n\n\treturn dmabuf->ops->mmap(dmabuf, vma);",
       "\tvma->vm_pgoff = pgoff;\n\n\tif (dma_buf_mutant == M) {\n\t\tint ret;\n\n"
       "\t\tdma_resv_lock(dmabuf->resv, NULL);\n\t\tret = dmabuf->ops->mmap(dmabuf, vma);\n"
       "\t\tdma_resv_unlock(dmabuf->resv);\n\t\treturn ret;\n\t}\n"
       "\treturn dmabuf->ops->mmap(dmabuf, vma);")]),
    ("begin_cpu_access is called with the lock held", "dma-buf.c", "y",
     [L + "dma_buf_test_unlocked_callbacks"],
     [("\tif (dmabuf->ops->begin_cpu_access)\n"
       "\t\tret = dmabuf->ops->begin_cpu_access(dmabuf, direction);",
       "\tif (dmabuf->ops->begin_cpu_access && dma_buf_mutant == M) {\n"
       "\t\tdma_resv_lock(dmabuf->resv, NULL);\n"
       "\t\tret = dmabuf->ops->begin_cpu_access(dmabuf, direction);\n"
       "\t\tdma_resv_unlock(dmabuf->resv);\n"
       "\t} else if (dmabuf->ops->begin_cpu_access)\n"
       "\t\tret = dmabuf->ops->begin_cpu_access(dmabuf, direction);")]),
    ("dma_buf_map_attachment_unlocked() maps without taking the lock", "dma-buf.c", "y",
     [L + "dma_buf_test_map", L + "dma_buf_test_cached_direction",
      L + "dma_buf_test_fence_wait", L + "dma_buf_test_fdinfo"],
     [("\tdma_resv_lock(attach->dmabuf->resv, NULL);\n"
       "\tsg_table = dma_buf_map_attachment(attach, direction);\n"
       "\tdma_resv_unlock(attach->dmabuf->resv);\n",
       "\tif (dma_buf_mutant != M)\n\t\tdma_resv_lock(attach->dmabuf->resv, NULL);\n"
       "\tsg_table = dma_buf_map_attachment(attach, direction);\n"
       "\tif (dma_buf_mutant != M)\n\t\tdma_resv_unlock(attach->dmabuf->resv);\n")]),
    ("vunmap unmaps on every call, not on the last", "dma-buf.c", "y",
     [L + "dma_buf_test_vmap"],
     [("\tif (--dmabuf->vmapping_counter == 0) {\n",
       "\tif (dma_buf_mutant == M && dmabuf->vmapping_counter > 1 && dmabuf->ops->vunmap)\n"
       "\t\tdmabuf->ops->vunmap(dmabuf, map);\n"
       "\tif (--dmabuf->vmapping_counter == 0) {\n")]),
    ("a static importer of a dynamic exporter is not pinned at attach", "dma-buf.c", "y",
     [L + "dma_buf_test_cached_at_attach", L + "dma_buf_test_attach_published"],
     [("\t\tif (dma_buf_is_dynamic(attach->dmabuf)) {\n\t\t\tret = dmabuf->ops->pin(attach);",
       "\t\tif (dma_buf_is_dynamic(attach->dmabuf) && dma_buf_mutant != M) {\n"
       "\t\t\tret = dmabuf->ops->pin(attach);")]),
    ("the attach-time mapping is made DMA_TO_DEVICE", "dma-buf.c", "y",
     [L + "dma_buf_test_cached_at_attach"],
     [("\t\tsgt = __map_dma_buf(attach, DMA_BIDIRECTIONAL);",
       "\t\tsgt = __map_dma_buf(attach, dma_buf_mutant == M ? DMA_TO_DEVICE :\n"
       "\t\t\t\t    DMA_BIDIRECTIONAL);")]),
    ("a failed attach-time map keeps the pin", "dma-buf.c", "y",
     [L + "dma_buf_test_attach_errors"],
     [("err_unpin:\n\tif (dma_buf_is_dynamic(attach->dmabuf))\n",
       "err_unpin:\n\tif (dma_buf_is_dynamic(attach->dmabuf) && dma_buf_mutant != M)\n")]),
    ("a failed attach skips the exporter's detach", "dma-buf.c", "y",
     [L + "dma_buf_test_attach_errors"],
     [("\tif (dmabuf->ops->detach)\n\t\tdmabuf->ops->detach(dmabuf, attach);\n\nerr_attach:",
       "\tif (dmabuf->ops->detach && dma_buf_mutant != M)\n"
       "\t\tdmabuf->ops->detach(dmabuf, attach);\n\nerr_attach:")]),
    ("an attachment is on the list before it is pinned and mapped (0002 reverted)",
     "dma-buf.c", "y",
     [L + "dma_buf_test_attach_published"],
     [("\tdma_resv_lock(dmabuf->resv, NULL);\n\n\t/* When either the importer",
       "\tdma_resv_lock(dmabuf->resv, NULL);\n"
       "\tif (dma_buf_mutant == M)\n\t\tlist_add(&attach->node, &dmabuf->attachments);\n"
       "\n\t/* When either the importer"),
      ("\t}\n\tlist_add(&attach->node, &dmabuf->attachments);\n\tdma_resv_unlock(dmabuf->resv);\n",
       "\t}\n\tif (dma_buf_mutant != M)\n\t\tlist_add(&attach->node, &dmabuf->attachments);\n"
       "\tdma_resv_unlock(dmabuf->resv);\n")]),
    ("a cached mapping is handed out for any direction", "dma-buf.c", "y",
     [L + "dma_buf_test_cached_direction"],
     [("\t\tif (attach->dir != direction &&\n\t\t    attach->dir != DMA_BIDIRECTIONAL)\n",
       "\t\tif (attach->dir != direction && dma_buf_mutant != M &&\n"
       "\t\t    attach->dir != DMA_BIDIRECTIONAL)\n")]),
    ("fdinfo prints the attachment report after the name", "dma-buf.c", "y",
     [L + "dma_buf_test_fdinfo", L + "dma_buf_test_fdinfo_locked"],
     [("\tdma_buf_show_attachments(m, dmabuf);\n\tspin_lock(&dmabuf->name_lock);\n"
       "\tif (dmabuf->name)\n\t\tseq_printf(m, \"name:\\t%s\\n\", dmabuf->name);\n"
       "\tspin_unlock(&dmabuf->name_lock);\n",
       "\tif (dma_buf_mutant != M)\n\t\tdma_buf_show_attachments(m, dmabuf);\n"
       "\tspin_lock(&dmabuf->name_lock);\n"
       "\tif (dmabuf->name)\n\t\tseq_printf(m, \"name:\\t%s\\n\", dmabuf->name);\n"
       "\tspin_unlock(&dmabuf->name_lock);\n"
       "\tif (dma_buf_mutant == M)\n\t\tdma_buf_show_attachments(m, dmabuf);\n")]),
    ("fdinfo waits for the reservation lock (the previous 0003)", "dma-buf.c", "y",
     [L + "dma_buf_test_fdinfo_locked"],
     [("\tif (!dma_resv_trylock(dmabuf->resv)) {\n",
       "\tif (dma_buf_mutant == M) {\n\t\tdma_resv_lock(dmabuf->resv, NULL);\n"
       "\t} else if (!dma_resv_trylock(dmabuf->resv)) {\n")]),
    ("the pinned= key is not counted for the pins the importer asks for", "dma-buf.c", "y",
     [L + "dma_buf_test_pin"],
     [("\t\tret = dmabuf->ops->pin(attach);\n\t\tif (!ret)\n\t\t\tattach->pin_count++;\n",
       "\t\tret = dmabuf->ops->pin(attach);\n\t\tif (!ret && dma_buf_mutant != M)\n"
       "\t\t\tattach->pin_count++;\n")]),
    ("udmabuf vmap maps the head page of each folio (0001 reverted)", "udmabuf.c", "y",
     [U + "udmabuf_test_vmap"],
     [("\t\tpages[pg] = folio_page(ubuf->folios[pg],\n"
       "\t\t\t\t       ubuf->offsets[pg] >> PAGE_SHIFT);",
       "\t\tpages[pg] = dma_buf_mutant == M ? &ubuf->folios[pg]->page :\n"
       "\t\t\tfolio_page(ubuf->folios[pg], ubuf->offsets[pg] >> PAGE_SHIFT);")]),
    ("udmabuf's scatterlist ignores each page's offset in its folio", "udmabuf.c", "y",
     [U + "udmabuf_test_map", U + "udmabuf_test_cpu_access"],
     [("\t\tsg_set_folio(sgl, ubuf->folios[i], PAGE_SIZE,\n\t\t\t     ubuf->offsets[i]);",
       "\t\tsg_set_folio(sgl, ubuf->folios[i], PAGE_SIZE,\n"
       "\t\t\t     dma_buf_mutant == M ? 0 : ubuf->offsets[i]);")]),
]

HOOKS = {
    "dma-buf.c": ("#include \"dma-buf-sysfs-stats.h\"\n",
                  "#include \"dma-buf-sysfs-stats.h\"\n\n"
                  "/* mutation-test.py: which deliberate breakage is active (0: none). */\n"
                  "int dma_buf_mutant;\ncore_param(dma_buf_mutant, dma_buf_mutant, int, 0444);\n"),
    "udmabuf.c": ("#include <linux/iosys-map.h>\n",
                  "#include <linux/iosys-map.h>\n\nextern int dma_buf_mutant;\n"),
    "dma-resv.c": ("#include <linux/dma-resv.h>\n",
                   "#include <linux/dma-resv.h>\n\nextern int dma_buf_mutant;\n"),
}

MECH_FILES = ("dma-buf.c", "dma-resv.c")
MECH_BASE = 1000  # mechanical mutants are numbered from here

# Mechanical mutants that survive and are equivalent, by id (see mutant_id()): the argument.
EQUIVALENT = {
}


def log(msg):
    print(msg, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


# --- mechanical mutants ---

def lex(text):
    """Per character: 'c' code, 'x' comment or string/char literal, 'p' preprocessor line."""
    kind = bytearray(b"c" * len(text))
    i, n = 0, len(text)
    bol = True
    while i < n:
        ch = text[i]
        if bol and text[i:].lstrip(" \t").startswith("#"):
            j = i
            while j < n:
                e = text.find("\n", j)
                e = n if e < 0 else e
                if e > 0 and text[e - 1] == "\\":
                    j = e + 1
                    continue
                j = e
                break
            kind[i:j] = b"p" * (j - i)
            i = j
            continue
        bol = ch == "\n"
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            kind[i:j] = b"x" * (j - i)
            bol = False
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            kind[i:j] = b"x" * (j - i)
            i = j
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            kind[i:j + 1] = b"x" * (j + 1 - i)
            i = j + 1
        else:
            i += 1
    return kind


def enabled_regions(text, config):
    """Per line: False where an #if/#ifdef on a CONFIG_ option excludes it."""
    on = []
    stack = []  # (this branch on, parent on, decided)

    def cond(expr):
        m = re.fullmatch(r"\s*(!)?\s*(?:defined\s*\(?|IS_ENABLED\(|IS_BUILTIN\()?\s*"
                         r"(CONFIG_\w+)\s*\)?\s*", expr)
        if not m:
            return None
        v = config.get(m.group(2)) == "y"
        return not v if m.group(1) else v

    for line in text.split("\n"):
        s = line.strip()
        cur = all(b for b, _, _ in stack)
        if s.startswith("#ifdef") or s.startswith("#ifndef") or s.startswith("#if "):
            if s.startswith("#ifdef"):
                c = config.get(s.split()[1]) == "y"
            elif s.startswith("#ifndef"):
                c = config.get(s.split()[1]) != "y"
            else:
                c = cond(s[3:])
                c = True if c is None else c
            stack.append([c, cur, c])
        elif s.startswith("#else") and stack:
            stack[-1][0] = not stack[-1][2]
        elif s.startswith("#elif") and stack:
            c = cond(s[5:])
            c = True if c is None else c
            stack[-1][0] = c and not stack[-1][2]
            stack[-1][2] = stack[-1][2] or c
        elif s.startswith("#endif") and stack:
            stack.pop()
        on.append(all(b for b, _, _ in stack))
    return on


def functions(text, kind):
    """[(name, body_start, body_end)] for each function definition at file scope."""
    out = []
    depth = 0
    start = None
    header_from = 0
    for i, ch in enumerate(text):
        if kind[i] != ord("c"):
            continue
        if ch == "{":
            if depth == 0:
                header = text[header_from:i]
                code = "".join(c for c, k in zip(header, kind[header_from:i]) if k == ord("c"))
                if code.rstrip().endswith(")") and "=" not in code.split("(")[0]:
                    m = re.search(r"(\w+)\s*\(", code)
                    start = (m.group(1) if m else "?", i + 1)
                else:
                    start = None
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                if start:
                    out.append((start[0], start[1], i))
                start = None
                header_from = i + 1
        elif ch == ";" and depth == 0:
            header_from = i + 1
    return out


def match_paren(text, kind, i):
    """Index of the ')' matching the '(' at i, in code."""
    depth = 0
    for j in range(i, len(text)):
        if kind[j] != ord("c"):
            continue
        if text[j] == "(":
            depth += 1
        elif text[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    return -1


def split_top(expr, op):
    """expr split at top-level occurrences of op ('&&' or '||'), or [expr]."""
    parts, depth, last, i = [], 0, 0, 0
    while i < len(expr):
        ch = expr[i]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif depth == 0 and expr.startswith(op, i):
            parts.append(expr[last:i])
            last = i + 2
            i += 2
            continue
        i += 1
    parts.append(expr[last:])
    return parts


CALL = re.compile(r"(?<![\w>.])((?:[\w]+(?:->|\.))*(\w+))\s*\(")
CALL_KIND = re.compile(r"(^|_)(lock|unlock|trylock|pin|unpin|wait|notify|wake_up|signal)"
                       r"(_|$)|^(lock|unlock|pin|unpin)")
NOT_CALL = re.compile(r"assert|lockdep|might_|_init$|_held$|_is_locked$|^seq_")
SWAPS = {
    "DMA_BIDIRECTIONAL": "DMA_TO_DEVICE",
    "DMA_TO_DEVICE": "DMA_FROM_DEVICE",
    "DMA_FROM_DEVICE": "DMA_TO_DEVICE",
    "DMA_RESV_USAGE_KERNEL": "DMA_RESV_USAGE_WRITE",
    "DMA_RESV_USAGE_WRITE": "DMA_RESV_USAGE_READ",
    "DMA_RESV_USAGE_READ": "DMA_RESV_USAGE_BOOKKEEP",
    "DMA_RESV_USAGE_BOOKKEEP": "DMA_RESV_USAGE_READ",
}


def squash(s):
    return re.sub(r"\s+", " ", s).strip()


def candidates(fname, text, config):
    """Every mechanical mutant of one file: dicts with a span and how to rewrite it."""
    kind = lex(text)
    lines_on = enabled_regions(text, config)
    line_of = [0] * (len(text) + 1)
    ln = 0
    for i, ch in enumerate(text):
        line_of[i] = ln
        if ch == "\n":
            ln += 1
    out = []

    def add(func, op, start, end, desc, fn):
        if not lines_on[line_of[start]] or not lines_on[line_of[end - 1]]:
            return
        out.append({"file": fname, "func": func, "op": op, "start": start, "end": end,
                    "line": line_of[start] + 1, "desc": desc, "fn": fn})

    for func, b0, b1 in functions(text, kind):
        body = text[b0:b1]
        # conditions
        for m in re.finditer(r"\bif\s*\(", body):
            p = b0 + m.end() - 1
            if kind[p] != ord("c"):
                continue
            q = match_paren(text, kind, p)
            if q < 0:
                continue
            cond = text[p + 1:q]
            add(func, "negate", p + 1, q, f"if ({squash(cond)}) negated",
                lambda inner, n: f"(dma_buf_mutant == {n}) != !!({inner})")
            for op in ("&&", "||"):
                parts = split_top(cond, op)
                if len(parts) < 2:
                    continue
                for k in range(len(parts)):
                    keep = [x for j, x in enumerate(parts) if j != k]
                    kept = f" {op} ".join(x.strip() for x in keep)
                    add(func, "weaken", p + 1, q,
                        f"if ({squash(cond)}): drops `{squash(parts[k])}`",
                        lambda inner, n, kept=kept:
                        f"(dma_buf_mutant == {n}) ? !!({kept}) : !!({inner})")
        # calls that lock, unlock, pin, unpin, wait or notify, as whole statements
        pos = b0
        while pos < b1:
            nl = text.find("\n", pos)
            nl = b1 if nl < 0 or nl > b1 else nl
            line = text[pos:nl]
            stripped = line.lstrip("\t ")
            s0 = pos + len(line) - len(stripped)
            first = re.match(r"[\w>.\-*&()\[\]]+", stripped)
            if (stripped and kind[s0] == ord("c") and first and
                    not re.match(r"\w+:(?!:)", stripped) and not re.match(
                    r"(if|for|while|return|else|case|goto|break|continue|switch|do|default|"
                    r"struct|const|unsigned|int|long|bool|char|void|static|enum|u\d+|s\d+|"
                    r"size_t|loff_t|__poll_t|ssize_t|list_for_each|dma_resv_for_each|"
                    r"dma_fence_array_for_each)\b", stripped)):
                # the statement: up to the ';' at paren depth 0
                depth, j, end = 0, s0, -1
                while j < b1:
                    if kind[j] == ord("c"):
                        c = text[j]
                        if c == "(":
                            depth += 1
                        elif c == ")":
                            depth -= 1
                        elif c in "{}":
                            break
                        elif c == ";" and depth == 0:
                            end = j + 1
                            break
                    j += 1
                if end > 0:
                    stmt = text[s0:end]
                    m = CALL.match(re.sub(r"^[\w>.\-\[\]*]+\s*=\s*", "", stmt))
                    if m and CALL_KIND.search(m.group(2)) and not NOT_CALL.search(m.group(2)):
                        add(func, "remove", s0, end, f"`{squash(stmt)}` removed",
                            lambda inner, n: f"{{ if (dma_buf_mutant != {n}) {inner} }}")
                    pos = end
                    continue
            pos = nl + 1
        # constants
        for m in re.finditer(r"\b(" + "|".join(SWAPS) + r")\b", body):
            p = b0 + m.start()
            if kind[p] != ord("c"):
                continue
            line = text[text.rfind("\n", 0, p) + 1:text.find("\n", p)]
            if re.match(r"\s*case\b", line):
                continue
            c = m.group(1)
            add(func, "swap", p, p + len(c), f"{c} -> {SWAPS[c]} in `{squash(line)}`",
                lambda inner, n, c=c: f"(dma_buf_mutant == {n} ? {SWAPS[c]} : {c})")
    out.sort(key=lambda c: (c["start"], -c["end"], c["op"], c["desc"]))
    seen = {}
    for c in out:
        key = f"{c['file']}:{c['func']}:{c['op']}:{c['desc']}"
        seen[key] = seen.get(key, 0) + 1
        c["id"] = key + (f"#{seen[key]}" if seen[key] > 1 else "")
    return out


def apply_edits(text, edits):
    """Applies span edits that nest or are disjoint; inner ones first."""
    edits = sorted(edits, key=lambda e: (e["start"], -e["end"]))

    def render(lo, hi, items):
        out, pos, i = [], lo, 0
        while i < len(items):
            e = items[i]
            kids = []
            j = i + 1
            while j < len(items) and items[j]["start"] < e["end"]:
                kids.append(items[j])
                j += 1
            out.append(text[pos:e["start"]])
            out.append(e["fn"](render(e["start"], e["end"], kids), e["n"]))
            pos = e["end"]
            i = j
        out.append(text[pos:hi])
        return "".join(out)

    return render(0, len(text), edits)


def crosses(a, b):
    return a["start"] < b["start"] < a["end"] < b["end"] or \
        b["start"] < a["start"] < b["end"] < a["end"]


def choose_sample(cands, k, seed):
    """k candidates drawn with random.Random(seed); ones whose span crosses an already drawn
    one's (neither nested nor disjoint) cannot share a file and are replaced by the next draw."""
    order = list(cands)
    random.Random(seed).shuffle(order)
    picked, replaced = [], []
    for c in order:
        if len(picked) == k:
            break
        if any(c["file"] == p["file"] and crosses(c, p) for p in picked):
            replaced.append(c)
            continue
        picked.append(c)
    return picked, replaced


# --- sources and kernels ---

def hooked(tree, f):
    anchor, hook = HOOKS[f]
    text = open(os.path.join(tree, "drivers/dma-buf", f)).read()
    if text.count(anchor) != 1:
        sys.exit(f"mutation-test: {f}: the hook's anchor is not there exactly once")
    return text.replace(anchor, hook)


def chosen_sources(tree):
    out = {f: hooked(tree, f) for f in HOOKS}
    for n, (name, f, _, _, edits) in enumerate(CHOSEN, 1):
        for orig, new in edits:
            c = out[f].count(orig)
            if c != 1:
                sys.exit(f"mutation-test: mutant {n} ({name}): its original code occurs "
                         f"{c} times in {f}, not once: update CHOSEN")
            out[f] = out[f].replace(orig, new.replace("!= M", f"!= {n}")
                                    .replace("== M", f"== {n}"))
    return out


def mech_sources(tree, sample):
    out = {f: hooked(tree, f) for f in HOOKS}
    for f in MECH_FILES:
        orig = open(os.path.join(tree, "drivers/dma-buf", f)).read()
        text = apply_edits(orig, [c for c in sample if c["file"] == f])
        out[f] = hooked_text(text, f)
    return out


def hooked_text(text, f):
    anchor, hook = HOOKS[f]
    return text.replace(anchor, hook, 1)


def prepare_source(tree, files):
    src = os.path.join(WORK, "src")
    if os.path.exists(src):
        shutil.rmtree(src)
    # Hard links: the untouched files keep their mtimes, so make rebuilds only what changed.
    run(["cp", "-al", tree, src])
    keep = os.path.join(WORK, "mutated")
    os.makedirs(keep, exist_ok=True)
    for f, text in files.items():
        saved = os.path.join(keep, f)
        if not os.path.exists(saved) or open(saved).read() != text:
            with open(saved + ".tmp", "w") as fh:
                fh.write(text)
            os.replace(saved + ".tmp", saved)
        dst = os.path.join(src, "drivers/dma-buf", f)
        os.unlink(dst)  # never write through a hard link into the shared tree
        shutil.copy2(saved, dst)
    return src


def fragment_text(move_notify):
    with open(os.path.join(HERE, "mutation.fragment")) as fh:
        text = fh.read()
    return text + ("CONFIG_DMABUF_MOVE_NOTIFY=y\n" if move_notify == "y"
                   else "# CONFIG_DMABUF_MOVE_NOTIFY is not set\n")


def configure(src, move_notify, obj=None):
    obj = obj or os.path.join(WORK, "obj")
    os.makedirs(obj, exist_ok=True)
    frag = os.path.join(obj, "fragment")
    text = fragment_text(move_notify)
    with open(frag, "w") as fh:
        fh.write(text)
    make = ["make", "-s", "-C", src, f"O={obj}"]
    run(make + ["tinyconfig"], stdout=subprocess.DEVNULL)
    run([os.path.join(src, "scripts/kconfig/merge_config.sh"), "-m", "-O", obj,
         os.path.join(obj, ".config"), frag], stdout=subprocess.DEVNULL)
    run(make + ["olddefconfig"], stdout=subprocess.DEVNULL)
    config = open(os.path.join(obj, ".config")).read().splitlines()
    lost = [o for o in text.splitlines() if o.startswith("CONFIG_") and o not in config]
    if move_notify == "n" and "CONFIG_DMABUF_MOVE_NOTIFY=y" in config:
        lost.append("# CONFIG_DMABUF_MOVE_NOTIFY is not set")
    if lost:
        sys.exit("mutation-test: options lost in olddefconfig: " + " ".join(lost))
    return dict(line.split("=", 1) for line in config if line.startswith("CONFIG_"))


def image_key(tree_id, files, move_notify):
    h = hashlib.sha256(tree_id.encode())
    h.update(fragment_text(move_notify).encode())
    for f in sorted(files):
        h.update(f.encode() + b"\0" + files[f].encode() + b"\0")
    return h.hexdigest()[:16]


def build(tree, tree_id, files, move_notify, label):
    """The bzImage for these mutated files and setting: reused when built before."""
    key = image_key(tree_id, files, move_notify)
    image = os.path.join(WORK, "images", f"{label}-{key}")
    if os.path.exists(image):
        return image, False
    src = prepare_source(tree, files)
    configure(src, move_notify)
    obj = os.path.join(WORK, "obj")
    run(["nice", "-n", "10", "make", "-s", "-C", src, f"O={obj}", f"-j{os.cpu_count()}",
         "bzImage"])
    os.makedirs(os.path.dirname(image), exist_ok=True)
    # Keep a few images only: the newest per label.
    for old in os.listdir(os.path.dirname(image)):
        if old.startswith(label + "-"):
            os.unlink(os.path.join(os.path.dirname(image), old))
    shutil.copy2(os.path.join(obj, "arch/x86/boot/bzImage"), image + ".tmp")
    os.replace(image + ".tmp", image)
    return image, True


# --- boots ---

LINE = re.compile(r"^(?:\[[ 0-9.]+\] )?( *)(not ok|ok) \d+ (.*?)(?: # (SKIP.*))?$")
SUBTEST = re.compile(r"^(?:\[[ 0-9.]+\] )?( *)# Subtest: (.*)$")
FAILMSG = re.compile(r"^(?:\[[ 0-9.]+\] )?( *)# (\w+): (?:EXPECTATION|ASSERTION) FAILED")
# A crash: the kernel or a KUnit case died. Lock-debugging reports ("BUG: spinlock ...",
# "BUG: sleeping function ...", lockdep's) are not crashes: the suite's exit turns them into
# an expectation failure of the case that caused them (debug_locks goes off).
CRASH = re.compile(r"Oops|general protection fault|kernel BUG at|BUG: kernel NULL pointer|"
                   r"BUG: unable to handle|BUG: stack guard|BUG: scheduling while atomic|"
                   r"BUG: soft lockup|BUG: workqueue lockup|"
                   r"try faulted|try timed out|test timed out|"
                   r"Internal error occurred|stack-protector|Kernel panic - not syncing: "
                   r"(?!VFS: Unable to mount root fs|No working init found)")
WARN = re.compile(r"WARNING:|BUG:|possible circular locking|inconsistent lock state|"
                  r"possible recursive locking|DEBUG_LOCKS_WARN_ON|suspicious RCU usage")


def boot(bzimage, mutant, logdir, label):
    """Boots once; returns a dict: failed/asserted/skipped cases, crash, warnings."""
    cmd = ["timeout", str(BOOT_TIMEOUT), "nice", "-n", "10", "qemu-system-x86_64", "-m", "1024",
           "-smp", "1", "-nographic", "-no-reboot", "-nic", "none", "-kernel", bzimage,
           "-append", f"{CMDLINE} dma_buf_mutant={mutant}"]
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL)
    console = p.stdout.decode(errors="replace")
    if logdir:
        with open(os.path.join(logdir, f"mutant-{mutant}-{label}.log"), "w") as fh:
            fh.write(console)
    suite = None
    failed, asserted, skipped, finished = [], set(), [], set()
    for line in console.splitlines():
        m = SUBTEST.match(line)
        if m and len(m.group(1)) == 4:
            suite = m.group(2)
            continue
        m = FAILMSG.match(line)
        if m and suite:
            asserted.add(f"{suite}.{m.group(2)}")
            continue
        m = LINE.match(line)
        if not m:
            continue
        indent, verdict, desc, skip = m.groups()
        if indent == "" and desc in SUITES:
            finished.add(desc)
        elif len(indent) == 4 and suite:
            if verdict == "not ok":
                failed.append(f"{suite}.{desc}")
            elif skip:
                skipped.append(f"{suite}.{desc}")
        elif len(indent) == 8 and skip and suite:
            skipped.append(f"{suite}.*: {desc}")
    crash = [line for line in console.splitlines() if CRASH.search(line)]
    if p.returncode == 124:
        crash.append(f"qemu killed after {BOOT_TIMEOUT} s (hang)")
    missing = [s for s in SUITES if s not in finished]
    if missing:
        crash.append("did not finish: " + ", ".join(missing))
    warnings = [line for line in console.splitlines() if WARN.search(line)]
    return {"failed": failed, "asserted": asserted, "skipped": skipped, "crash": crash,
            "warnings": warnings, "secs": time.monotonic() - t0}


def verdict(r, expected):
    """killed / crashed / survived, and the observed failing cases."""
    failing = [c for c in r["failed"] if c in r["asserted"]]
    if r["crash"]:
        return "crashed", failing
    hit = [c for c in failing if expected is None or c in expected]
    return ("killed" if hit else "survived"), failing


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated mutant numbers")
    ap.add_argument("--sample", type=int, default=int(os.environ.get("MUTATION_SAMPLE", 24)),
                    help="how many mechanical mutants to run (default 24)")
    ap.add_argument("--seed", default=os.environ.get("MUTATION_SEED", "20"),
                    help="seed of the mechanical sample (default 20; 'random' for a new one)")
    ap.add_argument("--keep-logs", help="directory for each boot's console")
    args = ap.parse_args()
    only = {int(x) for x in args.only.split(",")} if args.only else None
    seed = random.randrange(1 << 30) if args.seed == "random" else int(args.seed)
    if args.keep_logs:
        os.makedirs(args.keep_logs, exist_ok=True)

    t0 = time.monotonic()
    stamp = time.monotonic()
    stages = []

    def stage(name):
        nonlocal stamp
        now = time.monotonic()
        stages.append((name, now - stamp))
        log(f"# stage: {name}: {now - stamp:.0f} s")
        stamp = now

    tree = subprocess.run([os.path.join(HERE, "build-kernel.sh"), "--source-dir"],
                          check=True, stdout=subprocess.PIPE).stdout.decode().split()[-1]
    series = [p.strip() for p in open(os.path.join(HERE, "series"))
              if p.strip() and not p.startswith("#")]
    tree_id = hashlib.sha256(open(os.path.join(tree, "Makefile"), "rb").read() + b"".join(
        open(os.path.join(HERE, p), "rb").read() for p in series)).hexdigest()
    stage("patched source tree (build-kernel.sh --source-dir)")

    # The mechanical candidates, on the configuration they run on (its .config kept by key).
    mech_config = "n"
    cfg = os.path.join(WORK, "config-" + image_key(tree_id, {}, mech_config))
    if not os.path.exists(cfg):
        config = configure(tree, mech_config, os.path.join(WORK, "config-obj"))
        with open(cfg + ".tmp", "w") as fh:
            fh.write("".join(f"{k}={v}\n" for k, v in sorted(config.items())))
        os.replace(cfg + ".tmp", cfg)
    config = dict(line.rstrip("\n").split("=", 1) for line in open(cfg))
    cands = []
    for f in MECH_FILES:
        cands += candidates(f, open(os.path.join(tree, "drivers/dma-buf", f)).read(), config)
    sample, replaced = choose_sample(cands, args.sample, seed)
    for i, c in enumerate(sorted(sample, key=lambda c: (c["file"], c["start"]))):
        c["n"] = MECH_BASE + i + 1
    sample.sort(key=lambda c: c["n"])
    by_op = {}
    for c in cands:
        by_op[c["op"]] = by_op.get(c["op"], 0) + 1
    log(f"# mechanical: {len(cands)} candidates compiled in with MOVE_NOTIFY={mech_config} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(by_op.items()))}); "
        f"sample of {len(sample)}, seed {seed}")
    for c in sample:
        log(f"#   {c['n']}: {c['file']}:{c['line']} {c['func']}(): {c['op']}: {c['desc']}")
    for c in replaced:
        log(f"#   not drawn: {c['file']}:{c['line']} {c['func']}(): its span crosses a drawn "
            f"mutant's in the same file: {c['desc']}")
    stage(f"mutated sources ({len(CHOSEN)} chosen, {len(sample)} of {len(cands)} mechanical)")

    chosen = chosen_sources(tree)
    images = {}
    for label, files, mn in (("chosen-y", chosen, "y"), ("chosen-n", chosen, "n"),
                             ("mech-n", mech_sources(tree, sample), "n")):
        images[label], built = build(tree, tree_id, files, mn, label)
        stage(f"{'build' if built else 'reuse'} {label} (CONFIG_DMABUF_MOVE_NOTIFY={mn})")

    n = 0
    bad = 0
    for label in ("chosen-y", "chosen-n", "mech-n"):
        n += 1
        r = boot(images[label], 0, args.keep_logs, label)
        problems = [("failed", r["failed"]), ("skipped (hugepages=4 was asked for)",
                                              r["skipped"]),
                    ("crash", r["crash"]), ("kernel said", r["warnings"])]
        if any(items for _, items in problems):
            bad += 1
            log(f"not ok {n} - clean series passes, no case skipped ({label}, {r['secs']:.0f} s)")
            for what, items in problems:
                for i in items:
                    log(f"#   {what}: {i}")
        else:
            log(f"ok {n} - clean series passes, no case skipped ({label}, {r['secs']:.0f} s)")
    stage("baseline boots (mutant 0 on each kernel)")
    if bad:
        log(f"1..{n}")
        log("# the clean series must pass before mutants mean anything")
        return 1

    rows = []
    chosen_bad = 0
    for num, (name, _, configs, expected, _) in enumerate(CHOSEN, 1):
        if only and num not in only:
            continue
        for mn in configs:
            n += 1
            r = boot(images[f"chosen-{mn}"], num, args.keep_logs, f"chosen-{mn}")
            v, failing = verdict(r, expected)
            rows.append((num, f"{name} [MOVE_NOTIFY={mn}]", expected, failing, v, r))
            short = ", ".join(e.split(".", 1)[1] for e in expected)
            if v == "killed":
                log(f"ok {n} - mutant {num} killed in {failing[0]}: {name} [MOVE_NOTIFY={mn}]")
            else:
                chosen_bad += 1
                log(f"not ok {n} - mutant {num} {v.upper()} (expected {short}): {name} "
                    f"[MOVE_NOTIFY={mn}]")
                for line in r["crash"][:3]:
                    log(f"#   {line}")
    stage(f"chosen mutant boots ({len(rows)})")

    mech_rows = []
    for c in sample:
        if only and c["n"] not in only:
            continue
        n += 1
        r = boot(images["mech-n"], c["n"], args.keep_logs, "mech-n")
        v, failing = verdict(r, None)
        what = f"{c['file']}:{c['line']} {c['func']}(): {c['op']}: {c['desc']}"
        mech_rows.append((c["n"], what, None, failing, v, r, c))
        if v == "killed":
            log(f"ok {n} - mutant {c['n']} killed in {failing[0]}: {what}")
        else:
            why = EQUIVALENT.get(c["id"])
            note = f"equivalent: {why}" if why else f"{v}, no argument of equivalence"
            log(f"not ok {n} - mutant {c['n']} {v.upper()}: {what} # TODO {note}")
            for line in r["crash"][:3]:
                log(f"#   {line}")
    stage(f"mechanical mutant boots ({len(mech_rows)}, MOVE_NOTIFY={mech_config})")

    log(f"1..{n}")
    log("# mutant | expected failing case | observed failing case(s) | verdict | boot")
    for row in rows + mech_rows:
        num, what, expected, failing, v, r = row[:6]
        exp = ", ".join(expected) if expected else "any case"
        obs = ", ".join(failing) if failing else "-"
        extra = " (kernel warned)" if r["warnings"] and v != "crashed" else ""
        log(f"# {num} {what} | {exp} | {obs} | {v}{extra} | {r['secs']:.0f} s")
    survivors = [row for row in mech_rows if row[4] != "killed"]
    if survivors:
        log("# mechanical mutants not killed:")
        for num, what, _, _, v, _, c in survivors:
            why = EQUIVALENT.get(c["id"])
            log(f"#   {num} [{c['id']}] {v}: " + (f"equivalent: {why}" if why else
                                                 "no argument of equivalence: a test is missing"))
    for name, secs in stages:
        log(f"# time: {name}: {secs:.0f} s")
    log(f"# time: total: {time.monotonic() - t0:.0f} s")
    kc = sum(1 for row in rows if row[4] == "killed")
    km = sum(1 for row in mech_rows if row[4] == "killed")
    crashed = sum(1 for row in rows + mech_rows if row[4] == "crashed")
    log(f"# Mutation score: {kc + km}/{len(rows) + len(mech_rows)} killed "
        f"(chosen {kc}/{len(rows)}, mechanical {km}/{len(mech_rows)} of {len(cands)} "
        f"candidates, seed {seed}); {crashed} crashed or hung, not counted as kills")
    return 0 if chosen_bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
