"""Jittor for the whole package, imported in this one place: its flags set for this machine
(:func:`styleblend.runtime.configure`), CUDA switched on when ``STYLEBLEND_DEVICE=cuda``, and the process's
default ``SIGCHLD`` handling and Python's fault handler restored.

Every module takes ``jt`` and ``nn`` from here and never imports ``jittor`` itself (a test checks): a module that
did would run on the CPU on a GPU machine unless some other code had switched CUDA on first.
"""
import faulthandler
import signal
import sys
import threading

from .runtime import start

jt = start()
nn = jt.nn

# Jittor installs a SIGCHLD handler that ends the whole process (quick_exit) when any child dies by a signal,
# e.g. a notebook kernel stopped by papermill or nbval. Signal handlers can only be set from the main thread.
if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)

# Jittor also replaces Python's fault handler (SIGSEGV, SIGFPE, SIGBUS, SIGILL) with its own, whose report goes to
# C++'s std::cerr — which Jittor redirects into Python inside a notebook kernel, so a crash there left no word in
# any log. Python's handler writes the stack of every thread to the process's real stderr.
if faulthandler.is_enabled():
    faulthandler.disable()
    faulthandler.enable(file=sys.__stderr__, all_threads=True)
