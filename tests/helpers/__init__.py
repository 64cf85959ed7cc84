"""What several test modules share: real stacks, clients, trainer runs, payloads.

Test modules import helpers from here, never from conftest.py (which holds
fixtures only) nor from another test module; tests/test_suite_markers.py checks it.
"""
