"""The durable folder queue: ``layout`` (folders), ``lifecycle`` (claim, finish, quarantine),
``instance`` (claim folders and their locks), ``recovery`` (a dead instance's claims),
``output`` (publishing outputs), ``records`` (error records) and ``fsio`` (durable file steps).

Nothing is imported here, so a command that needs one step loads only that module.
"""
