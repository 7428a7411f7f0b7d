"""The reference demo's web page on the four real role processes: its layout, a tab's logic, the role driver."""
