"""Measurements that print numbers: protocol costs against an in-process baseline, hostile peers, load."""
