"""The pure domain: records, mapping, conversion, the consent and identity rules, plans and ports.

Nothing here does I/O, reads the clock or the environment, or imports the services and adapters around it;
`tests/unit/test_domain_purity.py` holds every module in this folder to that.
"""
