"""Contact sync between Dynamics 365 and Spotler Mail+."""
