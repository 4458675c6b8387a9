"""What NanoGPT generations cost: a ledger per ST user, measured from the account's balance and quota.

``service.SpendService`` takes generation reports from the extension and account readings from
``AccountService``; ``attribution`` decides what each change of the account belongs to; ``views``,
``budget`` and ``export`` turn the ledger into totals, alerts and CSV. See docs/http-contract.md.
"""
