"""SQL transforms (stg → mart → rpt) built in dependency order. Not built yet: see the transforms issue."""
