"""The configuration the client's dynamic e2e suites ask for.

The client's wheel ships its e2e tests but not the module they import
their cluster from; wkube's test harness provides it, pointed at the
kubeconfig of the server under test (the KUBECONFIG variable).
"""

import os

from kubernetes import config
from kubernetes.client import configuration


def get_e2e_configuration():
    conf = configuration.Configuration()
    config.load_kube_config(
        config_file=os.environ["KUBECONFIG"], client_configuration=conf
    )
    return conf
