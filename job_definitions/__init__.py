"""The job definitions shipped with OPUS: installed as package data of opus (see setup.cfg)."""
