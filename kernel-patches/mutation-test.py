#!/usr/bin/env python3
"""Mutation testing of the dma-buf and udmabuf KUnit suites.

Deliberate breakages ("mutants") of drivers/dma-buf/ are compiled into one kernel, each behind
a test of the boot parameter dma_buf_mutant=N, so that one build serves every mutant and each
mutant costs one boot. A mutant is killed when its boot reports a failing KUnit case (or the
suites do not finish); it survives when both suites pass. Mutant 0 is the clean series and
must pass on both configurations, with no kernel warning.

    mutation-test.py [--only N,...] [--keep-logs DIR]

Two kernels: tinyconfig + mutation.fragment with CONFIG_DMABUF_MOVE_NOTIFY=y, and the same
with it off, for the mutant of the code only built without it. The source is the patched
tree of build-kernel.sh --source-dir, hard-linked into $DMABROKER_CACHE/kernel-mutants/src
with the mutated files replaced; the one object tree stays there too, so switching the
option or rerunning rebuilds only what changed. Prints TAP, the time of each stage and the mutation score; exits non-zero unless
every mutant is killed.
"""

import argparse
import os
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

# (name, file, configs, [(original, mutated), ...]): each original must occur exactly once
# in the patched file; "M" in a mutated text stands for the mutant's number.
MUTANTS = [
    ("static importers no longer wait for the kernel fences", "dma-buf.c", "y",
     [("\tif (!dma_buf_attachment_is_dynamic(attach)) {\n\t\tret = dma_resv_wait_timeout(",
       "\tif (!dma_buf_attachment_is_dynamic(attach) && dma_buf_mutant != M) {\n"
       "\t\tret = dma_resv_wait_timeout(")]),
    ("dynamic importers wait for the kernel fences too", "dma-buf.c", "y",
     [("\tif (!dma_buf_attachment_is_dynamic(attach) && dma_buf_mutant != 1) {\n",
       "\tif ((!dma_buf_attachment_is_dynamic(attach) && dma_buf_mutant != 1) ||\n"
       "\t    dma_buf_mutant == M) {\n")]),
    ("dma_buf_move_notify() is a no-op", "dma-buf.c", "y",
     [("\tdma_resv_assert_held(dmabuf->resv);\n\n"
       "\tlist_for_each_entry(attach, &dmabuf->attachments, node)\n"
       "\t\tif (attach->importer_ops)\n",
       "\tdma_resv_assert_held(dmabuf->resv);\n\n"
       "\tif (dma_buf_mutant == M)\n\t\treturn;\n"
       "\tlist_for_each_entry(attach, &dmabuf->attachments, node)\n"
       "\t\tif (attach->importer_ops)\n")]),
    ("without MOVE_NOTIFY, no pin on map (and no unpin on unmap)", "dma-buf.c", "n",
     [("\t\tif (!IS_ENABLED(CONFIG_DMABUF_MOVE_NOTIFY)) {\n\t\t\tr = attach->dmabuf->ops->pin(attach);",
       "\t\tif (!IS_ENABLED(CONFIG_DMABUF_MOVE_NOTIFY) && dma_buf_mutant != M) {\n"
       "\t\t\tr = attach->dmabuf->ops->pin(attach);"),
      ("\tif (IS_ERR(sg_table) && dma_buf_is_dynamic(attach->dmabuf) &&\n"
       "\t     !IS_ENABLED(CONFIG_DMABUF_MOVE_NOTIFY))\n",
       "\tif (IS_ERR(sg_table) && dma_buf_is_dynamic(attach->dmabuf) &&\n"
       "\t     !IS_ENABLED(CONFIG_DMABUF_MOVE_NOTIFY) && dma_buf_mutant != M)\n"),
      ("\tif (dma_buf_is_dynamic(attach->dmabuf) &&\n"
       "\t    !IS_ENABLED(CONFIG_DMABUF_MOVE_NOTIFY))\n\t\tdma_buf_unpin(attach);",
       "\tif (dma_buf_is_dynamic(attach->dmabuf) &&\n"
       "\t    !IS_ENABLED(CONFIG_DMABUF_MOVE_NOTIFY) && dma_buf_mutant != M)\n"
       "\t\tdma_buf_unpin(attach);")]),
    ("detach unpins after dropping the lock", "dma-buf.c", "y",
     [("\t\tif (dma_buf_is_dynamic(attach->dmabuf))\n\t\t\tdmabuf->ops->unpin(attach);\n"
       "\t}\n\tlist_del(&attach->node);\n\n\tdma_resv_unlock(dmabuf->resv);\n",
       "\t\tif (dma_buf_is_dynamic(attach->dmabuf) && dma_buf_mutant != M)\n"
       "\t\t\tdmabuf->ops->unpin(attach);\n"
       "\t}\n\tlist_del(&attach->node);\n\n\tdma_resv_unlock(dmabuf->resv);\n"
       "\tif (dma_buf_mutant == M && attach->sgt && dma_buf_is_dynamic(dmabuf))\n"
       "\t\tdmabuf->ops->unpin(attach);\n")]),
    ("mmap is called with the lock held (the rule of 6.2 to 6.5)", "dma-buf.c", "y",
     [("\tvma->vm_pgoff = pgoff;\n\n\treturn dmabuf->ops->mmap(dmabuf, vma);",
       "\tvma->vm_pgoff = pgoff;\n\n\tif (dma_buf_mutant == M) {\n\t\tint ret;\n\n"
       "\t\tdma_resv_lock(dmabuf->resv, NULL);\n\t\tret = dmabuf->ops->mmap(dmabuf, vma);\n"
       "\t\tdma_resv_unlock(dmabuf->resv);\n\t\treturn ret;\n\t}\n"
       "\treturn dmabuf->ops->mmap(dmabuf, vma);")]),
    ("begin_cpu_access is called with the lock held", "dma-buf.c", "y",
     [("\tif (dmabuf->ops->begin_cpu_access)\n"
       "\t\tret = dmabuf->ops->begin_cpu_access(dmabuf, direction);",
       "\tif (dmabuf->ops->begin_cpu_access && dma_buf_mutant == M) {\n"
       "\t\tdma_resv_lock(dmabuf->resv, NULL);\n"
       "\t\tret = dmabuf->ops->begin_cpu_access(dmabuf, direction);\n"
       "\t\tdma_resv_unlock(dmabuf->resv);\n"
       "\t} else if (dmabuf->ops->begin_cpu_access)\n"
       "\t\tret = dmabuf->ops->begin_cpu_access(dmabuf, direction);")]),
    ("dma_buf_map_attachment_unlocked() maps without taking the lock", "dma-buf.c", "y",
     [("\tdma_resv_lock(attach->dmabuf->resv, NULL);\n"
       "\tsg_table = dma_buf_map_attachment(attach, direction);\n"
       "\tdma_resv_unlock(attach->dmabuf->resv);\n",
       "\tif (dma_buf_mutant != M)\n\t\tdma_resv_lock(attach->dmabuf->resv, NULL);\n"
       "\tsg_table = dma_buf_map_attachment(attach, direction);\n"
       "\tif (dma_buf_mutant != M)\n\t\tdma_resv_unlock(attach->dmabuf->resv);\n")]),
    ("vunmap unmaps on every call, not on the last", "dma-buf.c", "y",
     [("\tif (--dmabuf->vmapping_counter == 0) {\n",
       "\tif (dma_buf_mutant == M && dmabuf->vmapping_counter > 1 && dmabuf->ops->vunmap)\n"
       "\t\tdmabuf->ops->vunmap(dmabuf, map);\n"
       "\tif (--dmabuf->vmapping_counter == 0) {\n")]),
    ("a static importer of a dynamic exporter is not pinned at attach", "dma-buf.c", "y",
     [("\t\tif (dma_buf_is_dynamic(attach->dmabuf)) {\n\t\t\tret = dmabuf->ops->pin(attach);",
       "\t\tif (dma_buf_is_dynamic(attach->dmabuf) && dma_buf_mutant != M) {\n"
       "\t\t\tret = dmabuf->ops->pin(attach);")]),
    ("the attach-time mapping is made DMA_TO_DEVICE", "dma-buf.c", "y",
     [("\t\tsgt = __map_dma_buf(attach, DMA_BIDIRECTIONAL);",
       "\t\tsgt = __map_dma_buf(attach, dma_buf_mutant == M ? DMA_TO_DEVICE :\n"
       "\t\t\t\t    DMA_BIDIRECTIONAL);")]),
    ("a failed attach-time map keeps the pin", "dma-buf.c", "y",
     [("err_unpin:\n\tif (dma_buf_is_dynamic(attach->dmabuf))\n",
       "err_unpin:\n\tif (dma_buf_is_dynamic(attach->dmabuf) && dma_buf_mutant != M)\n")]),
    ("a failed attach stays on the attachment list", "dma-buf.c", "y",
     [("\tdma_resv_unlock(attach->dmabuf->resv);\n\n\tdma_buf_detach(dmabuf, attach);\n"
       "\treturn ERR_PTR(ret);",
       "\tdma_resv_unlock(attach->dmabuf->resv);\n\n\tif (dma_buf_mutant != M)\n"
       "\t\tdma_buf_detach(dmabuf, attach);\n\treturn ERR_PTR(ret);")]),
    ("a cached mapping is handed out for any direction", "dma-buf.c", "y",
     [("\t\tif (attach->dir != direction &&\n\t\t    attach->dir != DMA_BIDIRECTIONAL)\n",
       "\t\tif (attach->dir != direction && dma_buf_mutant != M &&\n"
       "\t\t    attach->dir != DMA_BIDIRECTIONAL)\n")]),
    ("fdinfo prints the attachment report after the name", "dma-buf.c", "y",
     [("\tdma_buf_show_attachments(m, dmabuf);\n\tspin_lock(&dmabuf->name_lock);\n"
       "\tif (dmabuf->name)\n\t\tseq_printf(m, \"name:\\t%s\\n\", dmabuf->name);\n"
       "\tspin_unlock(&dmabuf->name_lock);\n",
       "\tif (dma_buf_mutant != M)\n\t\tdma_buf_show_attachments(m, dmabuf);\n"
       "\tspin_lock(&dmabuf->name_lock);\n"
       "\tif (dmabuf->name)\n\t\tseq_printf(m, \"name:\\t%s\\n\", dmabuf->name);\n"
       "\tspin_unlock(&dmabuf->name_lock);\n"
       "\tif (dma_buf_mutant == M)\n\t\tdma_buf_show_attachments(m, dmabuf);\n")]),
    ("udmabuf vmap maps the head page of each folio (0001 reverted)", "udmabuf.c", "y",
     [("\t\tpages[pg] = folio_page(ubuf->folios[pg],\n"
       "\t\t\t\t       ubuf->offsets[pg] >> PAGE_SHIFT);",
       "\t\tpages[pg] = dma_buf_mutant == M ? &ubuf->folios[pg]->page :\n"
       "\t\t\tfolio_page(ubuf->folios[pg], ubuf->offsets[pg] >> PAGE_SHIFT);")]),
    ("udmabuf's scatterlist ignores each page's offset in its folio", "udmabuf.c", "y",
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
}


def log(msg):
    print(msg, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def mutate(tree):
    """The mutated dma-buf.c and udmabuf.c, from the patched tree's."""
    out = {}
    for f, (anchor, hook) in HOOKS.items():
        text = open(os.path.join(tree, "drivers/dma-buf", f)).read()
        if text.count(anchor) != 1:
            sys.exit(f"mutation-test: {f}: the hook's anchor is not there exactly once")
        out[f] = text.replace(anchor, hook)
    for n, (name, f, _, edits) in enumerate(MUTANTS, 1):
        for orig, new in edits:
            c = out[f].count(orig)
            if c != 1:
                sys.exit(f"mutation-test: mutant {n} ({name}): its original code occurs "
                         f"{c} times in {f}, not once: update MUTANTS")
            out[f] = out[f].replace(orig, new.replace("!= M", f"!= {n}")
                                    .replace("== M", f"== {n}"))
    return out


def prepare_source(tree):
    src = os.path.join(WORK, "src")
    keep = os.path.join(WORK, "mutated")
    os.makedirs(keep, exist_ok=True)
    if os.path.exists(src):
        shutil.rmtree(src)
    # Hard links: the untouched files keep their mtimes, so make rebuilds only what changed.
    run(["cp", "-al", tree, src])
    for f, text in mutate(tree).items():
        saved = os.path.join(keep, f)
        if not os.path.exists(saved) or open(saved).read() != text:
            with open(saved + ".tmp", "w") as fh:
                fh.write(text)
            os.replace(saved + ".tmp", saved)
        dst = os.path.join(src, "drivers/dma-buf", f)
        os.unlink(dst)  # never write through a hard link into the shared tree
        shutil.copy2(saved, dst)
    return src


def build(src, move_notify):
    # One object tree for both configurations: kbuild's fixdep records which files depend
    # on CONFIG_DMABUF_MOVE_NOTIFY, so switching it rebuilds those few and relinks.
    obj = os.path.join(WORK, "obj")
    os.makedirs(obj, exist_ok=True)
    frag = os.path.join(obj, "fragment")
    with open(os.path.join(HERE, "mutation.fragment")) as fh:
        text = fh.read()
    text += ("CONFIG_DMABUF_MOVE_NOTIFY=y\n" if move_notify == "y"
             else "# CONFIG_DMABUF_MOVE_NOTIFY is not set\n")
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
    run(make + [f"-j{os.cpu_count()}", "bzImage"])
    image = os.path.join(WORK, f"bzImage-move-notify-{move_notify}")
    shutil.copy2(os.path.join(obj, "arch/x86/boot/bzImage"), image)
    return image


LINE = re.compile(r"^(?:\[[ 0-9.]+\] )?( *)(not ok|ok) \d+ (.*?)(?: # (SKIP.*))?$")


def boot(bzimage, mutant, logdir, label):
    """Boots once; returns (verdict, details, console)."""
    cmd = ["timeout", "600", "qemu-system-x86_64", "-m", "1024", "-smp", "1", "-nographic",
           "-no-reboot", "-nic", "none", "-kernel", bzimage,
           "-append", f"{CMDLINE} dma_buf_mutant={mutant}"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL)
    console = p.stdout.decode(errors="replace")
    if logdir:
        with open(os.path.join(logdir, f"mutant-{mutant}-{label}.log"), "w") as fh:
            fh.write(console)
    failed, skipped, finished = [], [], set()
    for line in console.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        indent, verdict, desc, skip = m.groups()
        if indent == "" and desc in SUITES:
            finished.add(desc)
        if verdict == "not ok":
            failed.append(desc)
        elif skip:
            skipped.append(desc)
    warnings = [line for line in console.splitlines()
                if re.search(r"WARNING:|BUG:|Oops|possible circular locking|"
                             r"inconsistent lock state|possible recursive locking|"
                             r"DEBUG_LOCKS_WARN_ON|suspicious RCU usage", line)]
    missing = [s for s in SUITES if s not in finished]
    return failed, skipped, missing, warnings, console


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated mutant numbers")
    ap.add_argument("--keep-logs", help="directory for each boot's console")
    args = ap.parse_args()
    only = {int(x) for x in args.only.split(",")} if args.only else None
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
    stage("patched source tree (build-kernel.sh --source-dir)")
    src = prepare_source(tree)
    stage(f"mutated source ({len(MUTANTS)} mutants behind dma_buf_mutant=N)")
    images = {}
    for mn in ("y", "n"):
        images[mn] = build(src, mn)
        stage(f"build, CONFIG_DMABUF_MOVE_NOTIFY={mn}")

    n = 0
    bad = 0
    for mn in ("y", "n"):
        n += 1
        failed, skipped, missing, warnings, _ = boot(images[mn], 0, args.keep_logs, mn)
        if failed or missing or warnings or skipped:
            bad += 1
            log(f"not ok {n} - clean series passes (MOVE_NOTIFY={mn})")
            for what, items in (("failed", failed), ("skipped", skipped),
                                ("did not finish", missing), ("kernel said", warnings)):
                for i in items:
                    log(f"#   {what}: {i}")
        else:
            log(f"ok {n} - clean series passes (MOVE_NOTIFY={mn})")
    stage("baseline boots (mutant 0, both configurations)")
    if bad:
        log(f"1..{n}")
        log("# the clean series must pass before mutants mean anything")
        return 1

    killed = 0
    total = 0
    for num, (name, _, configs, _) in enumerate(MUTANTS, 1):
        if only and num not in only:
            continue
        for mn in configs:
            total += 1
            n += 1
            failed, skipped, missing, _, _ = boot(images[mn], num, args.keep_logs, mn)
            if failed or missing:
                killed += 1
                why = f"{len(failed)} failing case(s)" if failed else "suites did not finish"
                first = f": {failed[0]}" if failed else ""
                log(f"ok {n} - mutant {num} killed ({why}{first}): {name} "
                    f"[MOVE_NOTIFY={mn}]")
            else:
                log(f"not ok {n} - mutant {num} SURVIVED: {name} [MOVE_NOTIFY={mn}]")
    stage(f"mutant boots ({total})")
    log(f"1..{n}")
    for name, secs in stages:
        log(f"# time: {name}: {secs:.0f} s")
    log(f"# time: total: {time.monotonic() - t0:.0f} s")
    log(f"# Mutation score: {killed}/{total}")
    return 0 if killed == total else 1


if __name__ == "__main__":
    sys.exit(main())
