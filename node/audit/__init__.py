"""Offline inspection of a node's home: the audit (``audit``), a read-only view of a store
(``storeview``), replay of stored blocks through the real apps (``replay``) and the state
difference between two homes (``statediff``). The daemon never imports this package."""
