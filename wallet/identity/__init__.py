"""Who may call: accounts and their profiles, passwords, login sessions (and the list their owner sees) and JWTs,
revocations, throttling, two-factor sign-in and step-up, API keys, Google sign-in, and the one normal form of e-mail
addresses and phone numbers.

It may use the ledger (a new account opens its first wallet), notify, providers, platform and the kernel; the
Principal it hands to everyone else lives in the kernel (wallet/principal.py), so the ledger needs nothing from here.
"""
