"""Small clients of third parties (sign-in and payment providers), each with its base URL from settings.

They may use the kernel only; what to do with an answer is decided by the capability that called them.
"""
