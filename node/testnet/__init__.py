"""Testnet tooling built on the daemon: local multi-process testnets (``testnet``), the load
generators (``loadgen``), chaos runs (``chaos``, ``chaos_scenario``, ``chaos_check``) and the
fault hooks a testnet node can be started with (``faults``, ``byzantine``).

The daemon never imports this package; ``suanpan start`` installs the fault hooks into a node
whose home asks for them (``[testnet] fault_hooks``).
"""
