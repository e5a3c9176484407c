"""Test-only faults for real worker processes (see ``sitecustomize``)."""
