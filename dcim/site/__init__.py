"""The site model: schema, loading with precise errors, expansion, generation."""

from dcim.site.errors import ConfigError, ConfigIssue
from dcim.site.loader import load_site, parse_site, site_from_dict
from dcim.site.model import Rack, Site, SiteDevice

__all__ = ["ConfigError", "ConfigIssue", "Rack", "Site", "SiteDevice", "load_site", "parse_site",
           "site_from_dict"]
